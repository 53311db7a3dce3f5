"""``difymaint doctor``: every dependency a job run needs, checked up front, each with its fix.

The checks only read, except where the operator asks otherwise (``--create-missing-indexes``, a test mail).
Each returns a :class:`Check`; a ``fail`` is a blocker (the jobs it concerns would fail), a ``warn`` works but
costs time or safety, ``skip`` means not configured (and not needed by what is configured).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from difymaint.core.context import Context
from difymaint.core.errors import DifymaintError
from difymaint.dify.switches import override_variable, switch_state
from difymaint.jobs import JOBS

log = logging.getLogger("difymaint")

# Without these, the database is not a Dify API database at all.
CORE_TABLES = ("tenants", "apps", "conversations", "messages", "workflow_runs")


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass
class Check:
    area: str
    status: Status
    detail: str
    hint: str = ""
    statements: list[str] = field(default_factory=list)  # SQL an operator can run to fix it

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data


@dataclass(frozen=True)
class DoctorOptions:
    create_missing_indexes: bool = False
    send_test_mail_to: str | None = None


def run_checks(ctx: Context, options: DoctorOptions) -> list[Check]:
    checks: list[Check] = []
    database_ok = _guard(checks, "database", lambda: _database(ctx))
    if database_ok:
        _guard(checks, "dify schema", lambda: _schema(ctx))
        _guard(checks, "indexes", lambda: _indexes(ctx, options.create_missing_indexes))
        _guard(checks, "session visibility", lambda: _session_visibility(ctx))
    _guard(checks, "redis", lambda: _redis(ctx))
    _guard(checks, "celery broker", lambda: _broker(ctx))
    _guard(checks, "billing", lambda: _billing(ctx))
    _guard(checks, "mail", lambda: _mail(ctx, options.send_test_mail_to))
    _guard(checks, "archive storage", lambda: _archive(ctx))
    checks.extend(_switches(ctx))
    checks.extend(_archive_before_delete(ctx))
    return checks


def _guard(checks: list[Check], area: str, check: Callable[[], Iterable[Check]]) -> bool:
    """Run one area's checks; an error becomes a failed check, never a traceback."""
    try:
        found = list(check())
    except DifymaintError as exc:
        found = [Check(area, Status.FAIL, exc.message, exc.hint or "")]
    except Exception as exc:  # a driver error: one line, the type and its first line
        first = (str(exc).strip().splitlines() or [""])[0]
        found = [Check(area, Status.FAIL, f"{type(exc).__name__}: {first}")]
    checks.extend(found)
    return all(check.status != Status.FAIL for check in found)


def _database(ctx: Context) -> list[Check]:
    engine = ctx.engine  # connects; raises DatabaseUnavailable with the fix
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            version = conn.execute(sa.text("SHOW server_version")).scalar()
            detail = f"PostgreSQL {version}, database {engine.url.database}"
        elif engine.dialect.name == "mysql":
            version = str(conn.execute(sa.text("SELECT VERSION()")).scalar())
            flavour = "MariaDB" if "mariadb" in version.lower() else "MySQL"
            detail = f"{flavour} {version.split('-')[0]}, database {engine.url.database}"
        else:
            detail = f"{engine.dialect.name} {engine.url.database}"
    return [Check("database", Status.OK, detail)]


def _schema(ctx: Context) -> list[Check]:
    from difymaint.dify.tables import metadata

    inspector = sa.inspect(ctx.engine)
    present = set(inspector.get_table_names())
    version = None
    if "alembic_version" in present:
        with ctx.engine.connect() as conn:
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version LIMIT 1")).scalar()
    missing_core = [table for table in CORE_TABLES if table not in present]
    if missing_core:
        return [
            Check(
                "dify schema",
                Status.FAIL,
                f"not a Dify API database: no {', '.join(missing_core)}",
                "point DB_DATABASE / --database-url at Dify's API database (default name: dify)",
            )
        ]
    checks = [Check("dify schema", Status.OK, f"alembic_version {version or 'absent'}")]
    missing_tables: list[str] = []
    missing_columns: list[str] = []
    for table in metadata.sorted_tables:
        if table.name not in present:
            missing_tables.append(table.name)
            continue
        columns = {column["name"] for column in inspector.get_columns(table.name)}
        missing_columns.extend(f"{table.name}.{c.name}" for c in table.columns if c.name not in columns)
    if missing_tables:
        checks.append(
            Check(
                "dify schema",
                Status.WARN,
                f"tables this Dify version lacks: {', '.join(missing_tables)}",
                "older Dify versions: the jobs skip the steps for optional tables and refuse the rest",
            )
        )
    if missing_columns:
        checks.append(
            Check(
                "dify schema",
                Status.WARN,
                f"columns this Dify version lacks: {', '.join(missing_columns)}",
                "run Dify's migrations (flask db upgrade), or expect the jobs that use them to refuse",
            )
        )
    return checks


def _indexes(ctx: Context, create: bool) -> list[Check]:
    from difymaint.dify.cascades import CONVERSATION_CASCADE, MESSAGE_CASCADE, WORKFLOW_RUN_CASCADE
    from difymaint.engine.schema import missing_leading_indexes

    edges = list(
        dict.fromkeys(
            (step.name, step.key)
            for cascade in (MESSAGE_CASCADE, CONVERSATION_CASCADE, WORKFLOW_RUN_CASCADE)
            for step in cascade.steps
        )
    )
    missing = missing_leading_indexes(ctx.engine, edges)
    checks: list[Check] = []
    if not missing:
        checks.append(Check("indexes", Status.OK, f"all {len(edges)} cascade columns lead an index"))
    else:
        checks.append(_missing_indexes(ctx, create, missing, "each cascade delete scans those tables"))
    # Filter columns a job walks in created_at order; reported only when missing (Dify's branch migration
    # 67b5709d7d0a adds dataset_queries' index, released Dify lacks it).
    filters = missing_leading_indexes(ctx.engine, FILTER_INDEXES)
    if filters:
        checks.append(_missing_indexes(ctx, create, filters, "clean-dataset-queries scans the table in every batch"))
    return checks


# (table, column) pairs a job selects its rows by, beyond the cascades.
FILTER_INDEXES = [("dataset_queries", "created_at")]


def _missing_indexes(ctx: Context, create: bool, missing: list[str], consequence: str) -> Check:
    mysql = ctx.engine.dialect.name == "mysql"
    statements = [_create_index_sql(edge, mysql=mysql) for edge in missing]
    if create and ctx.engine.dialect.name in ("postgresql", "mysql"):
        # CONCURRENTLY cannot run inside a transaction block, and does not block Dify's writes.
        with ctx.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for statement in statements:
                log.info("running: %s", statement)
                conn.execute(sa.text(statement))
        return Check("indexes", Status.OK, f"created {len(statements)} index(es): {', '.join(missing)}")
    return Check(
        "indexes",
        Status.WARN,
        f"no index leads with {', '.join(missing)}: {consequence}",
        "run the statements below, or doctor --create-missing-indexes",
        statements,
    )


def _create_index_sql(edge: str, *, mysql: bool = False) -> str:
    table, column = edge.split(".", 1)
    if mysql:  # an online (in-place, no lock) build on MySQL 8.0 and MariaDB alike
        return f"ALTER TABLE {table} ADD INDEX difymaint_{table}_{column}_idx ({column}), ALGORITHM=INPLACE, LOCK=NONE;"
    return f"CREATE INDEX CONCURRENTLY IF NOT EXISTS difymaint_{table}_{column}_idx ON {table} ({column});"


def _session_visibility(ctx: Context) -> list[Check]:
    """What the run's looks at pg_stat_activity and pg_stat_replication can see: PostgreSQL shows another role's
    sessions (state, waits) and the replicas' positions only to superusers and members of pg_read_all_stats, so
    without it the pacing sees the traffic and WAL waits of its own role's sessions only (Dify's, when Dify
    connects as the same role) and --max-replica-lag needs --replica-url."""
    engine = ctx.engine
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT current_user AS role, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) "
                "OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS sees_all"
            )
        ).one()
    if row.sees_all:
        return [Check("session visibility", Status.OK, f"role {row.role} sees every session and replica")]
    return [
        Check(
            "session visibility",
            Status.OK,
            f"role {row.role} sees its own sessions only: the pacing reads the traffic and WAL waits of sessions "
            "that connect as it (Dify's, with the same DB_USERNAME), and --max-replica-lag cannot read the replicas",
            f"GRANT pg_monitor TO {row.role}; to pace on every role's traffic and throttle on replica lag "
            "(or pass --replica-url)",
            statements=[f"GRANT pg_monitor TO {row.role};"],
        )
    ]


def _redis(ctx: Context) -> list[Check]:
    from difymaint.core.redis_client import redis_configured

    settings = ctx.settings
    if not redis_configured(settings):
        return [
            Check(
                "redis",
                Status.SKIP,
                "not configured: locks are PostgreSQL advisory locks (SQLite: lock files)",
                "set REDIS_HOST (or --redis-url) to share Dify's retention locks with a running Dify beat",
            )
        ]
    client = ctx.redis  # pings on first use; raises RedisUnavailable with the fix
    assert client is not None
    prefix = settings.REDIS_KEY_PREFIX
    shown = f"key prefix {prefix!r}" if prefix else "no key prefix"
    return [Check("redis", Status.OK, f"reachable, DB {settings.REDIS_DB}, {shown}")]


def _broker(ctx: Context) -> list[Check]:
    settings = ctx.settings
    if not settings.CELERY_BROKER_URL:
        return [
            Check(
                "celery broker",
                Status.SKIP,
                "CELERY_BROKER_URL not set",
                "needed to hand work to Dify's workers (clean-unused-datasets --enqueue-index-removal)",
            )
        ]
    from difymaint.dify.celery import publisher

    publisher(settings).close()  # connects and pings; raises BrokerUnavailable with the fix
    return [Check("celery broker", Status.OK, "reachable")]


def _billing(ctx: Context) -> list[Check]:
    from difymaint.dify.billing import plan_source

    source = plan_source(ctx.settings, ctx.clock)
    if source is None:
        return [
            Check(
                "billing",
                Status.OK,
                "BILLING_ENABLED is false: every workspace counts as sandbox (as in Dify)",
            )
        ]
    whitelist = source.fetch_whitelist()
    return [Check("billing", Status.OK, f"{source.name} answers ({len(whitelist)} whitelisted workspace(s))")]


def _mail(ctx: Context, test_to: str | None) -> list[Check]:
    from difymaint.dify.mail import Mail, mail_sender

    sender = mail_sender(ctx.settings)
    if sender is None:
        return [
            Check(
                "mail",
                Status.SKIP,
                "MAIL_TYPE not set: mail is off, as in Dify",
                "needed by notify-cleaned-documents (and queue alerts)",
            )
        ]
    if test_to:
        sender.send(
            Mail(
                to=test_to,
                subject="difymaint test mail",
                html="<p>This is a test mail sent by <code>difymaint doctor --send-test-mail</code>.</p>",
                text="This is a test mail sent by difymaint doctor --send-test-mail.",
            )
        )
        return [Check("mail", Status.OK, f"{sender.name}: test mail handed over for {test_to}")]
    return [Check("mail", Status.OK, f"{sender.name} configured", "--send-test-mail ADDRESS sends a test mail")]


def _archive(ctx: Context) -> list[Check]:
    from difymaint.dify.storage import ARCHIVE_S3_SETTINGS, archive_store

    settings = ctx.settings
    if settings.DIFYMAINT_ARCHIVE_DIR is None and not any(getattr(settings, name) for name in ARCHIVE_S3_SETTINGS):
        return [
            Check(
                "archive storage",
                Status.SKIP,
                "no archive destination configured",
                "archive-workflow-runs needs DIFYMAINT_ARCHIVE_DIR or Dify's ARCHIVE_STORAGE_* settings",
            )
        ]
    store = archive_store(settings, writing=False)
    return [Check("archive storage", Status.OK, f"configured: {store.description}")]


def _switches(ctx: Context) -> list[Check]:
    """Per scheduled job: would a scheduled difymaint run go ahead, and would Dify's beat run it too?"""
    checks = []
    for info in JOBS.values():
        if not info.scheduled:
            continue
        state = switch_state(ctx.settings, info.name, info.switches)
        dify_on = bool(info.switches) and all(switch.on(ctx.settings) for switch in info.switches)
        shared_lock = info.lock_key.startswith("retention:")
        if state.enabled and dify_on:
            status = Status.OK if shared_lock else Status.WARN
            hint = (
                "Dify's beat, if it still runs, takes the same lock: the two never overlap"
                if shared_lock
                else f"if Dify's beat still runs, it runs {info.dify_task} too: stop the beat or turn the switch off "
                "in Dify and set " + f"{override_variable(info.name)}=true here"
            )
            detail = f"{info.name}: scheduled ({state.reason})"
        elif state.enabled:
            status, detail, hint = Status.OK, f"{info.name}: scheduled ({state.reason})", ""
        else:
            status, detail, hint = Status.SKIP, f"{info.name}: not scheduled ({state.reason})", ""
        checks.append(Check("schedule", status, detail, hint))
    return checks


def _archive_before_delete(ctx: Context) -> list[Check]:
    """archive-workflow-runs archives ended runs at PAID_PLAN_WORKFLOW_RUN_ARCHIVE_RETENTION_DAYS; a deleting
    job scheduled with a shorter retention over the same workspaces removes them first, so nothing is ever
    archived. Each setting is Dify's and fine alone: only the combination loses the archive."""
    settings = ctx.settings
    if not switch_state(settings, "archive-workflow-runs", JOBS["archive-workflow-runs"].switches).enabled:
        return []
    archive_days = settings.PAID_PLAN_WORKFLOW_RUN_ARCHIVE_RETENTION_DAYS
    deleters = [("clean-workflow-logs", "WORKFLOW_LOG_RETENTION_DAYS", "every workspace")]
    if not settings.BILLING_ENABLED:  # billing on: clean-workflow-runs takes sandbox workspaces, archive paid ones
        deleters.append(
            ("clean-workflow-runs", "SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS", "every workspace (billing off)")
        )
    checks = []
    for name, setting, scope in deleters:
        days = getattr(settings, setting)
        if days < archive_days and switch_state(settings, name, JOBS[name].switches).enabled:
            checks.append(
                Check(
                    "schedule",
                    Status.WARN,
                    f"{name} deletes the ended workflow runs of {scope} after {days} days ({setting}), before "
                    f"archive-workflow-runs archives them at {archive_days} days: nothing will be archived",
                    "archive first: set PAID_PLAN_WORKFLOW_RUN_ARCHIVE_RETENTION_DAYS below "
                    f"{setting}, or raise {setting}, or turn one of the two jobs off",
                )
            )
    return checks


def has_blocker(checks: Iterable[Check]) -> bool:
    return any(check.status == Status.FAIL for check in checks)
