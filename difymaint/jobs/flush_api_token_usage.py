"""flush-api-token-usage: copy Service-API token usage from Redis to ``api_tokens.last_used_at``
(docs/jobs/flush-api-token-usage.md).

One batch per SCAN page of the prefixed usage keys (:class:`UsageKeys`): ``GETDEL`` them in one pipeline (a
timestamp written after the read survives as a new key), keep the newest per token (:func:`latest`), then one
``UPDATE … FROM (VALUES …)`` that only moves ``last_used_at`` forward (:func:`apply`; one ``UPDATE`` per entry
on SQLite). Pages are processed and dropped, so the keys are never all in memory. When the ``UPDATE`` fails,
the page's timestamps are put back with ``SET NX`` (a newer one written meanwhile wins) before the error ends
the run. Tokens are secrets: only :func:`token_hash` (a short SHA-256) ever appears in output.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from redis.exceptions import RedisError

from difymaint.core.context import Context
from difymaint.core.errors import ConfigError, DifymaintError, RedisUnavailable
from difymaint.core.redis_client import redis_configured
from difymaint.engine.options import RunOptions
from difymaint.engine.run import JobRun
from difymaint.engine.schema import Need, check_schema

JOB = "flush-api-token-usage"
KEY_FAMILY = "api_token_active:"  # Dify's ACTIVE_TOKEN_KEY_PREFIX
KEY_TTL_S = 3600  # what the API sets; used when a failed page is put back
TABLE = "api_tokens"


@dataclass(frozen=True)
class FlushApiTokenUsageParams:
    run: RunOptions = field(default_factory=RunOptions)


Params = FlushApiTokenUsageParams


def token_hash(token: str) -> str:
    """What output shows instead of a token: 12 hex digits of its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Usage:
    token: str
    scope: str | None  # None: Dify's literal "None" scope
    used_at: datetime  # naive UTC, like the column


def parse_usage(key_suffix: str, value: bytes | str | None) -> Usage | None:
    """One key's usage, or None when the key or value is malformed (Dify logs and drops those too)."""
    if not value:
        return None
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    try:
        used_at = datetime.fromisoformat(text)
    except ValueError:
        return None
    if used_at.tzinfo is not None:
        used_at = used_at.astimezone(UTC).replace(tzinfo=None)
    scope, sep, token = key_suffix.partition(":")
    if not sep or not token:
        return None
    return Usage(token=token, scope=None if scope == "None" else scope, used_at=used_at)


def latest(usages: Iterable[Usage]) -> list[Usage]:
    """One entry per (token, scope), the newest timestamp (a VALUES list must not update a row twice)."""
    newest: dict[tuple[str, str | None], Usage] = {}
    for usage in usages:
        key = (usage.token, usage.scope)
        if key not in newest or usage.used_at > newest[key].used_at:
            newest[key] = usage
    return list(newest.values())


def _values_sql(usages: Sequence[Usage]) -> tuple[str, dict[str, Any]]:
    rows, binds = [], {}
    for i, usage in enumerate(usages):
        rows.append(f"(CAST(:t{i} AS varchar), CAST(:s{i} AS varchar), CAST(:u{i} AS timestamp))")
        binds.update({f"t{i}": usage.token, f"s{i}": usage.scope, f"u{i}": usage.used_at})
    return "(VALUES " + ", ".join(rows) + ") AS v(token, type, used_at)", binds


# ``IS NOT DISTINCT FROM``: Dify compares ``type == scope``, which SQLAlchemy turns into IS NULL for "None".
_MATCH = (
    "t.token = v.token AND t.type IS NOT DISTINCT FROM v.type "
    "AND (t.last_used_at IS NULL OR t.last_used_at < v.used_at)"
)


def apply(conn: sa.Connection, usages: Sequence[Usage], *, dry_run: bool) -> list[Usage]:
    """Move ``last_used_at`` forward for these usages (a dry run only selects them): one statement.
    Returns the usages that moved (would move) a row."""
    if not usages:
        return []
    if conn.dialect.name == "mysql":
        return _apply_mysql(conn, usages, dry_run=dry_run)
    if conn.dialect.name != "postgresql":
        return _apply_portable(conn, usages, dry_run=dry_run)
    values, binds = _values_sql(usages)
    if dry_run:
        statement = f"SELECT v.token, v.type, v.used_at FROM api_tokens AS t, {values} WHERE {_MATCH}"
    else:
        statement = (
            f"UPDATE api_tokens AS t SET last_used_at = v.used_at FROM {values} WHERE {_MATCH} "
            "RETURNING v.token, v.type, v.used_at"
        )
    return [Usage(row.token, row.type, row.used_at) for row in conn.execute(sa.text(statement), binds)]


def _apply_mysql(conn: sa.Connection, usages: Sequence[Usage], *, dry_run: bool) -> list[Usage]:
    """MySQL/MariaDB: no UPDATE … FROM VALUES and no UPDATE … RETURNING, so the page is a derived table joined
    twice: the rows that move are read (and locked) first, then one multi-table UPDATE moves exactly them."""
    rows, binds = [], {}
    for i, usage in enumerate(usages):
        rows.append(f"SELECT :t{i} AS token, :s{i} AS type, CAST(:u{i} AS DATETIME(6)) AS used_at")
        binds.update({f"t{i}": usage.token, f"s{i}": usage.scope, f"u{i}": usage.used_at})
    values = "(" + " UNION ALL ".join(rows) + ") AS v"
    match = "t.token = v.token AND t.type <=> v.type AND (t.last_used_at IS NULL OR t.last_used_at < v.used_at)"
    lock = "" if dry_run else " FOR UPDATE"
    found = conn.execute(
        sa.text(f"SELECT v.token, v.type, v.used_at FROM api_tokens AS t JOIN {values} ON {match}{lock}"), binds
    ).all()
    if found and not dry_run:
        conn.execute(sa.text(f"UPDATE api_tokens AS t JOIN {values} ON {match} SET t.last_used_at = v.used_at"), binds)
    return [Usage(row.token, row.type, row.used_at) for row in found]


def _apply_portable(conn: sa.Connection, usages: Sequence[Usage], *, dry_run: bool) -> list[Usage]:
    """SQLite: the same predicate, one statement per entry (no UPDATE … FROM VALUES with typed casts)."""
    from difymaint.dify.tables import api_tokens as table

    moved = []
    for usage in usages:
        where = sa.and_(
            table.c.token == usage.token,
            table.c.type.is_(None) if usage.scope is None else table.c.type == usage.scope,
            sa.or_(table.c.last_used_at.is_(None), table.c.last_used_at < usage.used_at),
        )
        if dry_run:
            count = int(conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar_one())
        else:
            count = int(conn.execute(sa.update(table).where(where).values(last_used_at=usage.used_at)).rowcount)
        moved += [usage] * count
    return moved


class UsageKeys:
    """The Redis side: SCAN pages of usage keys, take (GETDEL) or peek (GET, dry run) their values."""

    def __init__(self, client: Any, prefix: str, count: int) -> None:
        self.client = client
        self.prefix = prefix  # physical prefix before KEY_FAMILY ("" or "<REDIS_KEY_PREFIX>:")
        self.match = _glob_escape(prefix + KEY_FAMILY) + "*"
        # scan_iter walks every node of a Redis Cluster too; it is lazy, so only a page is held at a time.
        self._keys = client.scan_iter(match=self.match, count=count)

    def page(self, size: int) -> list[str]:
        keys = itertools.islice(self._keys, size)
        return [key.decode("utf-8", "replace") if isinstance(key, bytes) else key for key in keys]

    def read(self, keys: Sequence[str], *, take: bool) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            if take:
                pipe.getdel(key)
            else:
                pipe.get(key)
        return list(pipe.execute())

    def put_back(self, pairs: Sequence[tuple[str, Any]]) -> None:
        """Restore taken values unless the API wrote a newer one meanwhile (NX)."""
        pipe = self.client.pipeline(transaction=False)
        for key, value in pairs:
            pipe.set(key, value, nx=True, ex=KEY_TTL_S)
        pipe.execute()

    def suffix(self, key: str) -> str:
        return key[len(self.prefix) + len(KEY_FAMILY) :]


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


def check(ctx: Context, params: FlushApiTokenUsageParams) -> None:
    if not redis_configured(ctx.settings):
        raise ConfigError(
            f"{JOB} needs Dify's Redis (the usage keys live there)",
            hint="set REDIS_HOST (and REDIS_PORT, REDIS_PASSWORD, REDIS_DB) or DIFYMAINT_REDIS_URL",
        )


def run(job: JobRun, params: FlushApiTokenUsageParams) -> None:
    ctx = job.ctx
    client = ctx.redis
    assert client is not None  # check() refused a run without Redis
    check_schema(ctx.engine, [Need(TABLE, ("token", "type", "last_used_at"))], job=JOB)
    physical = ctx.keys.key(KEY_FAMILY)
    keys = UsageKeys(client, physical[: -len(KEY_FAMILY)], job.options.batch_size or 0)
    counts = {"keys_scanned": 0, "usages": 0, "malformed_dropped": 0, "rows_updated": 0, "not_newer_or_unknown": 0}
    job.summary.details.update(match=keys.match, counts=counts)
    ctx.reporter.info(f"{JOB}: scanning {keys.match}")
    try:
        _flush(job, keys, counts)
    except RedisError as exc:
        raise RedisUnavailable(f"{JOB}: Redis failed mid-run: {exc}", hint="rerun; taken keys were put back") from None
    job.settle_remaining()


def _flush(job: JobRun, keys: UsageKeys, counts: dict[str, int]) -> None:
    dry_run = job.dry_run
    while job.keep_going():
        page = keys.page(job.batch_size)
        if not page:
            break  # the scan is complete
        values = keys.read(page, take=not dry_run)
        usages: list[Usage] = []
        for key, value in zip(page, values, strict=True):
            if value is None:
                continue  # expired, or taken by a concurrent run, since SCAN saw it
            usage = parse_usage(keys.suffix(key), value)
            if usage is None:
                counts["malformed_dropped"] += 1  # taken (deleted) already; a dry run only counts it
                job.ctx.reporter.warning(f"{JOB}: dropped a malformed usage key (token sha256 {_key_hash(keys, key)})")
                continue
            usages.append(usage)
        counts["keys_scanned"] += len(page)
        counts["usages"] += len(usages)
        entries = latest(usages)
        with job.batch() as batch:
            try:
                with batch.transaction() as conn:
                    moved = apply(conn, entries, dry_run=dry_run)
                    changed = len(moved)
            except BaseException as exc:
                # The page's values are gone from Redis (GETDEL): put them back, whether the batch is retried
                # (statement timeout; SCAN has moved on, so the next run takes them) or the run fails.
                if not dry_run:
                    taken = [(k, v) for k, v in zip(page, values, strict=True) if v is not None]
                    keys.put_back(taken)
                if isinstance(exc, sa.exc.DBAPIError):
                    # The driver's message carries the statement's parameters and row DETAIL: tokens. Name the
                    # error class only.
                    raise DifymaintError(
                        f"{JOB}: the UPDATE of {TABLE} failed ({type(exc.orig).__name__}); the page's usage keys "
                        "were put back",
                        hint="rerun with --debug only where its output is private (it shows the tokens)",
                    ) from exc
                raise
            if dry_run:
                for usage in moved:  # never the token itself
                    job.ctx.output.write(
                        f"would set last_used_at of {usage.scope} token sha256:{token_hash(usage.token)} to "
                        f"{usage.used_at.isoformat()}\n"
                    )
            counts["rows_updated"] += changed
            counts["not_newer_or_unknown"] += len(entries) - changed
            batch.record(scanned=len(page), affected=changed, rows={TABLE: changed})


def _key_hash(keys: UsageKeys, key: str) -> str:
    return token_hash(keys.suffix(key).partition(":")[2] or keys.suffix(key))
