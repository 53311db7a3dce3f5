"""Settings, read with Dify's own environment variable names.

An operator points difymaint at Dify's ``.env`` file or ConfigMap unchanged. Field names *are* the env var
names (Dify's own convention), so an error can always name the variable. difymaint's own knobs carry the
``DIFYMAINT_`` prefix. CLI flags are overlaid in one place, :func:`load_settings`.
"""

from __future__ import annotations

import io
import os
import re
import zoneinfo
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from difymaint.core.errors import ConfigError
from difymaint.core.redact import mask_urls, secret_name, secrets_in
from difymaint.core.window import MAX_DAYS

OnLocked = Literal["skip", "fail", "ok"]
Port = Annotated[int, Field(ge=1, le=65535)]
# Any retention in days: at most MAX_DAYS, so that "now - days" stays a representable date.
Days = Annotated[int, Field(ge=1, le=MAX_DAYS)]
Minutes = Annotated[int, Field(ge=1, le=MAX_DAYS * 24 * 60)]
# Dify's DB_TYPE values: oceanbase and seekdb speak MySQL's protocol and dialect.
DB_TYPES = ("postgresql", "mysql", "oceanbase", "seekdb")
MIN_LOCK_TTL = 10  # the --lock-ttl minimum; the heartbeat renews every TTL/3


def _check_url(value: str | None, name: str, schemes: tuple[str, ...]) -> str | None:
    """A URL with a supported scheme and a numeric port, refused up front rather than by a driver later."""
    if value is None:
        return None
    parts = urlsplit(value.strip())
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in schemes:
        raise ValueError(f"{name} must start with {' or '.join(s + '://' for s in schemes)}")
    try:
        port = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError:
        port = 0
    if port == 0 or parts.netloc.rpartition("@")[2].endswith(":"):  # "host:" parses as no port at all
        raise ValueError(f"{name} has an invalid port (1-65535)")
    return value


class PlanEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan: str = Field(min_length=1)
    expiration_date: int = -1  # unix seconds, -1 = never paid; a numeric string is accepted, as from the API


class PlanFile(BaseModel):
    """DIFYMAINT_PLAN_FILE's schema: unknown keys and malformed entries are errors, never skipped (a skipped
    default would silently change which workspaces are eligible)."""

    model_config = ConfigDict(extra="forbid")
    default: PlanEntry | None = None
    tenants: dict[str, PlanEntry] = Field(default_factory=dict)
    whitelist: list[str] = Field(default_factory=list)


def read_plan_file(path: Path) -> PlanFile:
    """The parsed plan file; ValueError (one line) when it is unreadable or does not fit the schema."""
    try:
        return PlanFile.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "file"
        raise ValueError(
            f"{path}: {where}: {first['msg']} (format: "
            '{"default": {"plan": "sandbox", "expiration_date": -1}, "tenants": {}, "whitelist": []})'
        ) from None


ScanStrategy = Literal["auto", "global", "eligible-apps", "eligible_apps"]


class _Group(BaseSettings):
    """A group of settings; only :class:`Settings`, which inherits them all, is ever validated, so the groups'
    own schemas are never built (start-up time: every scheduled run pays it)."""

    model_config = SettingsConfigDict(defer_build=True)


class DatabaseSettings(_Group):
    DIFYMAINT_DATABASE_URL: str | None = Field(
        default=None,
        description="A postgresql://, mysql:// (mysql+pymysql) or sqlite:// SQLAlchemy URL; overrides the DB_* "
        "variables.",
    )
    DB_TYPE: str = Field(
        default="postgresql", description="Dify's: postgresql, mysql, or the MySQL-compatible oceanbase / seekdb."
    )
    DB_HOST: str = "localhost"
    DB_PORT: Port = 5432
    DB_USERNAME: str = "postgres"
    DB_PASSWORD: SecretStr = SecretStr("")
    DB_DATABASE: str = "dify"
    DB_CHARSET: str = ""
    DB_EXTRAS: str = ""
    DB_SESSION_TIMEZONE_OVERRIDE: str = "UTC"
    SQLALCHEMY_POOL_SIZE: PositiveInt = 30
    SQLALCHEMY_MAX_OVERFLOW: NonNegativeInt = 10
    SQLALCHEMY_POOL_RECYCLE: int = 3600
    SQLALCHEMY_POOL_PRE_PING: bool = False
    SQLALCHEMY_POOL_USE_LIFO: bool = False
    SQLALCHEMY_POOL_TIMEOUT: PositiveInt = 30
    SQLALCHEMY_ECHO: bool = False
    DIFYMAINT_STATEMENT_TIMEOUT: NonNegativeInt = Field(
        default=120,
        description="Seconds; SET LOCAL statement_timeout for every batch on PostgreSQL, max_statement_time on "
        "MariaDB, max_execution_time (SELECTs only) on MySQL (0 = off).",
    )
    DIFYMAINT_LOCK_TIMEOUT: NonNegativeInt = Field(
        default=5,
        description="Seconds; SET LOCAL lock_timeout for every batch on PostgreSQL, innodb_lock_wait_timeout on "
        "MySQL/MariaDB (0 = off: the server's own).",
    )

    @field_validator("DIFYMAINT_DATABASE_URL")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        return _check_url(value, "DIFYMAINT_DATABASE_URL", ("postgresql", "postgres", "mysql", "mariadb", "sqlite"))

    @field_validator("DB_TYPE")
    @classmethod
    def _db_type(cls, value: str) -> str:
        if value not in DB_TYPES:
            raise ValueError(f"must be one of {', '.join(DB_TYPES)} (Dify's values)")
        return value

    @field_validator("DB_EXTRAS")
    @classmethod
    def _db_extras(cls, value: str) -> str:
        # Dify appends it to the URL as a query string: key=value&key=value.
        if value:
            try:
                pairs = parse_qsl(value, keep_blank_values=True, strict_parsing=True)
            except ValueError:
                pairs = [("", "")]
            if not pairs or any(not key for key, _ in pairs):
                raise ValueError("DB_EXTRAS must be a query string like options=-c%20statement_timeout%3D0")
        return value

    @field_validator("DB_SESSION_TIMEZONE_OVERRIDE")
    @classmethod
    def _timezone(cls, value: str) -> str:
        if value and value.upper() != "UTC" and zoneinfo.available_timezones():
            try:
                zoneinfo.ZoneInfo(value)
            except (ValueError, zoneinfo.ZoneInfoNotFoundError):
                raise ValueError("not a time zone name (e.g. UTC, Asia/Shanghai)") from None
        return value


class RedisSettings(_Group):
    DIFYMAINT_REDIS_URL: str | None = Field(
        default=None, description="redis:// or rediss:// URL; overrides the REDIS_* variables."
    )
    DIFYMAINT_USE_REDIS: bool | None = Field(
        default=None,
        description="Force Redis on or off. Default: on when REDIS_HOST, a Sentinel, a cluster or "
        "DIFYMAINT_REDIS_URL is configured.",
    )
    REDIS_HOST: str = "localhost"
    REDIS_PORT: Port = 6379
    REDIS_USERNAME: str | None = None
    REDIS_PASSWORD: SecretStr | None = None
    REDIS_DB: NonNegativeInt = 0
    REDIS_USE_SSL: bool = False
    REDIS_SSL_CERT_REQS: str = "CERT_NONE"
    REDIS_SSL_CA_CERTS: str | None = None
    REDIS_SSL_CERTFILE: str | None = None
    REDIS_SSL_KEYFILE: str | None = None
    REDIS_KEY_PREFIX: str = ""
    REDIS_USE_SENTINEL: bool = False
    REDIS_SENTINELS: str | None = None
    REDIS_SENTINEL_SERVICE_NAME: str | None = None
    REDIS_SENTINEL_USERNAME: str | None = None
    REDIS_SENTINEL_PASSWORD: SecretStr | None = None
    REDIS_SENTINEL_SOCKET_TIMEOUT: PositiveFloat = 0.1
    REDIS_USE_CLUSTERS: bool = False
    REDIS_CLUSTERS: str | None = None
    REDIS_CLUSTERS_PASSWORD: SecretStr | None = None
    REDIS_SOCKET_TIMEOUT: PositiveFloat = 5.0
    REDIS_SOCKET_CONNECT_TIMEOUT: PositiveFloat = 5.0

    @field_validator("DIFYMAINT_REDIS_URL")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        return _check_url(value, "DIFYMAINT_REDIS_URL", ("redis", "rediss", "unix"))

    CELERY_BROKER_URL: str | None = Field(
        default=None,
        description="Dify's Celery broker (redis://, rediss://, sentinel:// with CELERY_USE_SENTINEL, amqp://), "
        "for jobs that hand work to Dify's workers.",
    )
    # Dify's Sentinel-fronted broker (ext_celery.py): the URL lists the sentinels, these name the master.
    CELERY_USE_SENTINEL: bool = False
    CELERY_SENTINEL_MASTER_NAME: str | None = None
    CELERY_SENTINEL_PASSWORD: SecretStr | None = None
    CELERY_SENTINEL_SOCKET_TIMEOUT: PositiveFloat = 0.1


class BillingSettings(_Group):
    BILLING_ENABLED: bool = False
    # Dify reads these two with os.environ and defaults them to their own names; an unset URL is
    # therefore a configuration error here rather than a request to the host "BILLING_API_URL".
    BILLING_API_URL: str | None = None
    BILLING_API_SECRET_KEY: SecretStr | None = None
    DIFYMAINT_BILLING_TIMEOUT: PositiveFloat = Field(default=10.0, description="Seconds per billing request.")
    DIFYMAINT_BILLING_RETRY_SECONDS: float = Field(
        default=10.0, ge=0, description="Retry connect/read errors for this long (Dify: 2 s apart, 10 s)."
    )
    DIFYMAINT_BILLING_RETRY_WAIT: float = Field(default=2.0, ge=0)

    @field_validator("DIFYMAINT_PLAN_FILE")
    @classmethod
    def _plan_file(cls, value: Path | None) -> Path | None:
        # Read now, before any lock or connection: a bad plan file is a configuration error (exit 2).
        if value is not None:
            read_plan_file(value)
        return value

    DIFYMAINT_PLAN_FILE: Path | None = Field(
        default=None,
        description="JSON file of tenant plans and a whitelist, used instead of the billing API "
        "(self-hosted operators who want per-tenant retention). Implies plan-aware cleanup.",
    )


class RetentionSettings(_Group):
    SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS: Days = 30
    SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_SIZE: PositiveInt = 1000
    SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_MAX_INTERVAL: NonNegativeInt = 200
    SANDBOX_EXPIRED_RECORDS_CLEAN_GRACEFUL_PERIOD: Annotated[int, Field(ge=0, le=MAX_DAYS)] = 21
    SANDBOX_EXPIRED_RECORDS_CLEAN_TASK_LOCK_TTL: PositiveInt = 90000
    SANDBOX_EXPIRED_RECORDS_CLEAN_SCAN_STRATEGY: ScanStrategy = "auto"
    SANDBOX_EXPIRED_RECORDS_CLEAN_APP_PAGE_SIZE: PositiveInt = 500
    # Dead in Dify since 2026-01 (legacy clean_messages); read so a stale .env still parses.
    PLAN_SANDBOX_CLEAN_MESSAGE_DAY_SETTING: Days = 30
    PLAN_SANDBOX_CLEAN_DAY_SETTING: Days = 30
    PLAN_PRO_CLEAN_DAY_SETTING: Days = 7
    WORKFLOW_LOG_RETENTION_DAYS: Days = 30
    WORKFLOW_LOG_CLEANUP_BATCH_SIZE: PositiveInt = 100
    WORKFLOW_LOG_CLEANUP_SPECIFIC_WORKFLOW_IDS: str = ""
    OAUTH_ACCESS_TOKEN_RETENTION_DAYS: Days = 30
    # clean-dataset-queries and reap-stuck-runs: Dify's branch-only tasks, with their names and defaults
    # (docs/jobs/clean-dataset-queries.md#settings, docs/jobs/reap-stuck-runs.md#settings).
    CLEAN_DATASET_QUERIES_RETENTION_DAYS: Days = 60
    CLEAN_DATASET_QUERIES_BATCH_SIZE: PositiveInt = 500
    ZOMBIE_WORKFLOW_SCHEDULED_TIMEOUT_MINUTES: Minutes = 5
    ZOMBIE_WORKFLOW_RUNNING_TIMEOUT_MINUTES: Minutes = 30
    # archive-workflow-runs / restore-workflow-runs (docs/jobs/archive-workflow-runs.md#settings; branch-only in Dify,
    # defaults of its CLI).
    PAID_PLAN_WORKFLOW_RUN_ARCHIVE_RETENTION_DAYS: Days = 90
    PAID_PLAN_WORKFLOW_RUN_ARCHIVE_BATCH_SIZE: PositiveInt = 100
    PAID_PLAN_WORKFLOW_RUN_ARCHIVE_TENANT_IDS: str = Field(
        default="", description="Comma-separated workspaces to archive (grayscale rollout); empty = all paid."
    )
    ARCHIVE_STORAGE_ENDPOINT: str | None = None
    ARCHIVE_STORAGE_ARCHIVE_BUCKET: str | None = None
    ARCHIVE_STORAGE_ACCESS_KEY: str | None = None
    ARCHIVE_STORAGE_SECRET_KEY: SecretStr | None = None
    ARCHIVE_STORAGE_REGION: str = "auto"
    DIFYMAINT_ARCHIVE_DIR: Path | None = Field(
        default=None, description="Write/read workflow-run archives in this local directory instead of S3."
    )
    DIFYMAINT_ARCHIVE_STORAGE_TIMEOUT: PositiveFloat = Field(default=60.0, description="Seconds per S3 request.")


class MailSettings(_Group):
    """Dify's mail settings (docs/dify-reference.md#mail). MAIL_TYPE unset = mail disabled, as in Dify."""

    MAIL_TYPE: str | None = Field(default=None, description="smtp | resend | sendgrid, as in Dify.")
    MAIL_DEFAULT_SEND_FROM: str | None = None
    SMTP_SERVER: str | None = None
    SMTP_PORT: Port = 465
    SMTP_USERNAME: str | None = None
    SMTP_PASSWORD: SecretStr | None = None
    SMTP_USE_TLS: bool = False
    SMTP_OPPORTUNISTIC_TLS: bool = False
    SMTP_LOCAL_HOSTNAME: str | None = None
    RESEND_API_KEY: SecretStr | None = None
    RESEND_API_URL: str = "https://api.resend.com"
    SENDGRID_API_KEY: SecretStr | None = None
    DIFYMAINT_SENDGRID_API_URL: str = Field(
        default="https://api.sendgrid.com", description="SendGrid's API base (Dify has no setting for it)."
    )
    DIFYMAINT_MAIL_TIMEOUT: PositiveFloat = Field(default=30.0, description="Seconds per SMTP/Resend call.")
    CONSOLE_WEB_URL: str = ""
    # Dify's queue monitor (schedule/queue_monitor_task.py); None threshold = Dify skips the check.
    QUEUE_MONITOR_THRESHOLD: NonNegativeInt | None = 200
    QUEUE_MONITOR_ALERT_EMAILS: str | None = None
    QUEUE_MONITOR_INTERVAL: NonNegativeFloat | None = 30


class DispatchSettings(_Group):
    """The dispatchers' settings: Dify's names and defaults (docs/jobs/check-upgradable-plugins.md,
    timeout-human-input.md, flush-api-token-usage.md)."""

    MARKETPLACE_API_URL: str = "https://marketplace.dify.ai"
    DIFYMAINT_DIFY_VERSION: str | None = Field(
        default=None,
        description="Sent as X-Dify-Version to the marketplace (Dify sends its own version); unset = no header.",
    )
    DIFYMAINT_MARKETPLACE_TIMEOUT: PositiveFloat = Field(default=30.0, description="Seconds (Dify: 30).")
    HUMAN_INPUT_GLOBAL_TIMEOUT_SECONDS: NonNegativeInt = 604800


OPENDAL_PREFIX = "OPENDAL_"


class StorageSettings(_Group):
    """Dify's file storage (STORAGE_TYPE), with Dify's names and defaults: the pause state objects
    timeout-human-input removes, and the files storage-report and sweep-files look at (difymaint/dify/storage.py)."""

    STORAGE_TYPE: str = "opendal"
    OPENDAL_SCHEME: str = "fs"
    OPENDAL_FS_ROOT: str = "storage"
    STORAGE_LOCAL_PATH: str = "storage"  # the legacy STORAGE_TYPE=local (deprecated in Dify)
    S3_ENDPOINT: str | None = None
    S3_BUCKET_NAME: str | None = None
    S3_ACCESS_KEY: str | None = None
    S3_SECRET_KEY: SecretStr | None = None
    S3_REGION: str | None = None
    S3_ADDRESS_STYLE: Literal["auto", "virtual", "path"] = "auto"
    S3_USE_AWS_MANAGED_IAM: bool = False
    DIFYMAINT_STORAGE_TIMEOUT: PositiveFloat = Field(
        default=60.0, description="Seconds per storage request (Dify's file storage and the archive storage)."
    )
    # Every OPENDAL_<SCHEME>_<OPTION> variable, collected by _opendal_options below: Dify hands them to OpenDAL
    # as option <option> (lower case) whatever the scheme, so they cannot be declared one by one.
    opendal_options: dict[str, str] = Field(default_factory=dict, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _opendal_options(cls, data: Any) -> Any:
        """The env file's (and the caller's) OPENDAL_* values, overlaid by the process environment's, as in
        Dify (its process environment wins over .env); empty values are unset."""
        if not isinstance(data, dict):
            return data
        found = {k: str(v) for k, v in data.items() if k.startswith(OPENDAL_PREFIX) and isinstance(v, str | int)}
        found.update({k: v for k, v in os.environ.items() if k.startswith(OPENDAL_PREFIX)})
        found = {k: v for k, v in found.items() if v != "" and k != "OPENDAL_SCHEME"}
        return {**data, "opendal_options": found}


class TidbSettings(_Group):
    """The TiDB-on-Qdrant cluster pool (docs/tidb-pool.md): Dify's names and defaults, plus difymaint's budget."""

    TIDB_API_URL: str | None = Field(
        default=None, description="TiDB Cloud Serverless API base, e.g. https://serverless.tidbapi.com/v1beta1."
    )
    TIDB_IAM_API_URL: str | None = Field(default=None, description="Read for parity with Dify; no call uses it.")
    TIDB_PUBLIC_KEY: str | None = Field(default=None, description="TiDB Cloud API key (HTTP Digest user).")
    TIDB_PRIVATE_KEY: SecretStr | None = Field(default=None, description="TiDB Cloud API key secret.")
    TIDB_PROJECT_ID: str | None = None
    TIDB_REGION: str = "regions/aws-us-east-1"
    TIDB_SPEND_LIMIT: NonNegativeInt = Field(default=100, description="Monthly spending limit of each new cluster.")
    TIDB_SERVERLESS_NUMBER: PositiveInt = Field(default=500, description="Target number of idle pooled clusters.")
    DIFYMAINT_TIDB_TIMEOUT: PositiveFloat = Field(default=10.0, description="Seconds per TiDB Cloud request phase.")
    DIFYMAINT_TIDB_MAX_REQUESTS: PositiveInt = Field(
        default=10,
        description="Failure budget: give up after this many failed TiDB Cloud requests in a row (429, 5xx, "
        "network errors); later calls in the same run then fail at once.",
    )
    DIFYMAINT_TIDB_MAX_SECONDS: PositiveFloat = Field(
        default=30.0, description="Failure budget: give up once failing requests have taken this long."
    )
    DIFYMAINT_TIDB_LEAK_FILE: Path = Field(
        default=Path("difymaint-tidb-leaks.jsonl"),
        description="JSON lines of clusters created in TiDB Cloud but not recorded in tidb_auth_bindings; "
        "create-tidb appends, update-tidb-status --reap-older-than deletes them. Keep it on a persistent volume.",
    )


class TriggerSettings(_Group):
    """Dify's schedule-trigger poller and trigger-subscription refresher (docs/jobs/poll-workflow-schedules.md,
    docs/jobs/refresh-trigger-providers.md): Dify's names and defaults."""

    WORKFLOW_SCHEDULE_POLLER_INTERVAL: PositiveInt = Field(default=1, description="Minutes between Dify's polls.")
    WORKFLOW_SCHEDULE_POLLER_BATCH_SIZE: PositiveInt = 100
    WORKFLOW_SCHEDULE_MAX_DISPATCH_PER_TICK: NonNegativeInt = Field(
        default=0, description="Circuit breaker: publish at most this many schedules per run (0 = unlimited)."
    )
    TRIGGER_PROVIDER_REFRESH_INTERVAL: PositiveInt = Field(default=1, description="Minutes between Dify's scans.")
    TRIGGER_PROVIDER_REFRESH_BATCH_SIZE: PositiveInt = 200
    TRIGGER_PROVIDER_CREDENTIAL_THRESHOLD_SECONDS: NonNegativeInt = 3600
    TRIGGER_PROVIDER_SUBSCRIPTION_THRESHOLD_SECONDS: NonNegativeInt = 3600


class RunSettings(_Group):
    DIFYMAINT_LOCK_TTL: int = Field(
        # Short, because the heartbeat keeps a live run's lease: a crashed run blocks the next for at most this.
        default=60,
        ge=MIN_LOCK_TTL,
        le=7 * 86400,
        description="Seconds (10 or more). A heartbeat renews the lock every third of this while the run lives, so "
        "this only bounds how long a crashed run blocks the next one (Dify's 25 h TTL is not used).",
    )
    DIFYMAINT_ON_LOCKED: OnLocked = Field(
        default="skip", description="Lock held by another run: skip (exit 5), fail (exit 1) or ok (exit 0)."
    )
    DIFYMAINT_ON_PARTIAL: Literal["partial", "ok"] = Field(
        default="partial",
        description="Budget (--max-runtime / --max-batches) reached: exit 4 (partial) or 0 (ok; the outcome stays "
        "partial in the summary). The generated CronJobs set ok: the next run continues, so it is no failure.",
    )
    DIFYMAINT_TARGET_BATCH_MS: NonNegativeInt = Field(
        default=300, description="Adapt the batch size toward this duration per batch (0 = fixed size)."
    )
    DIFYMAINT_SHARED_BATCH_MS: NonNegativeInt = Field(
        default=40,
        description="While other sessions use the database (seen at the end of each batch), aim batches at this "
        "duration instead of DIFYMAINT_TARGET_BATCH_MS: Dify's own commits wait for the WAL a batch wrote before "
        "them, so shorter batches keep its latency (0 = off; --sleep-ms 0 turns it off).",
    )
    DIFYMAINT_SLEEP_COEF: NonNegativeFloat = Field(
        default=1.0,
        le=100,
        description="While other sessions wait on the WAL or on a batch's locks, pause up to this many times the "
        "batch's duration after it (scaled by how often recent batches saw them); --sleep-ms 0 turns it off.",
    )
    DIFYMAINT_YIELD_TO_LOCK_WAITERS: bool = Field(
        default=True,
        description="When other sessions wait on a batch's locks as it commits, pause at least as long as the batch "
        "took and halve the next one (--sleep-ms 0 turns it off).",
    )
    DIFYMAINT_MAX_BATCH_SIZE: PositiveInt = Field(
        default=50000,
        description="Upper bound of the adapted batch size (parent rows per batch; SQLite stays at 10000).",
    )
    DIFYMAINT_WORKERS: int = Field(
        default=1, ge=1, le=8, description="Parallel connections for the cascade jobs (--workers; PostgreSQL)."
    )
    DIFYMAINT_DEADLINE_GRACE_S: PositiveFloat = Field(
        default=30.0,
        le=3600,
        description="Seconds past --max-runtime after which a statement the database still has not finished is "
        "cancelled, and its connection dropped if the server does not act on the cancel.",
    )
    DIFYMAINT_SHARD: str | None = Field(
        default=None, description="K/N: this run's shard of the apps (--shard; Kubernetes Indexed Jobs)."
    )
    DIFYMAINT_MAX_REPLICA_LAG: PositiveFloat | None = Field(
        default=None,
        le=86400,
        description="Seconds: before each batch a deleting job waits while a streaming replica's replay lags more "
        "than this (--max-replica-lag; PostgreSQL). Unset: no waiting.",
    )
    DIFYMAINT_REPLICA_URL: str | None = Field(
        default=None,
        description="Read the lag on this replica instead of pg_stat_replication on the primary (--replica-url; for "
        "a role without pg_monitor).",
    )
    DIFYMAINT_ON_REPLICA_LOST: Literal["continue", "stop"] = Field(
        default="continue",
        description="A replica that disappears mid-run and is not back within DIFYMAINT_REPLICA_LOST_WAIT_S: "
        "go on without it, or stop the run (partial).",
    )
    DIFYMAINT_REPLICA_LOST_WAIT_S: PositiveFloat = Field(
        default=60.0, le=3600, description="Seconds to wait for a replica that disappeared mid-run to come back."
    )

    @field_validator("DIFYMAINT_REPLICA_URL")
    @classmethod
    def _replica_url(cls, value: str | None) -> str | None:
        return _check_url(value, "DIFYMAINT_REPLICA_URL", ("postgresql", "postgres"))

    DIFYMAINT_LONG_TRANSACTION_WARN_S: NonNegativeInt = Field(
        default=3600, description="Warn about other transactions open longer than this (they block vacuum)."
    )
    DIFYMAINT_ASSUME_YES: bool = False
    LOG_TZ: str | None = Field(
        default=None, description="Dify's beat time zone: status and run-due read the cron schedules in it (UTC)."
    )
    # Dify's beat intervals not declared with their jobs' other settings (docs/dify-reference.md); with
    # QUEUE_MONITOR_INTERVAL, WORKFLOW_SCHEDULE_POLLER_INTERVAL and TRIGGER_PROVIDER_REFRESH_INTERVAL they shape
    # the schedules (ops/schedule.py job_schedule).
    HUMAN_INPUT_TIMEOUT_TASK_INTERVAL: PositiveInt = Field(default=1, description="Minutes between Dify's checks.")
    API_TOKEN_LAST_USED_UPDATE_INTERVAL: PositiveInt = Field(default=30, description="Minutes between Dify's flushes.")
    CELERY_BEAT_SCHEDULER_TIME: PositiveInt = Field(
        default=1, description="Days: Dify's day_of_month='*/N' for its four day-scaled retention jobs."
    )
    DIFYMAINT_HISTORY_KEEP_DAYS: NonNegativeInt = Field(
        default=30,
        description="run-due deletes finished run records older than this at each tick (minute-level jobs write "
        "thousands a day); 0 keeps them all.",
    )
    DIFYMAINT_HISTORY: bool = Field(
        default=True,
        description="Record every run in the database (schema difymaint on PostgreSQL); off also disables pauses.",
    )
    DIFYMAINT_SCHEDULED: bool = Field(
        default=False,
        description="This is an unattended scheduled run (what --scheduled says): skip jobs Dify's switches turn off.",
    )
    DIFYMAINT_PING_URL: str | None = Field(
        default=None,
        description="Dead-man switch (healthchecks.io style): /start, success and /fail pings; {job} is expanded.",
    )
    DIFYMAINT_METRICS_TEXTFILE: str | None = Field(
        default=None,
        description="Prometheus textfile to write after each run ({job} expanded; a directory gets one file per job).",
    )
    SENTRY_DSN: str | None = Field(
        default=None, description="Dify's Sentry DSN: a Crons check-in per run and an event per failed run."
    )
    ENABLE_OTEL: bool = Field(default=False, description="Dify's switch: send each run's metrics over OTLP/HTTP.")
    OTLP_BASE_ENDPOINT: str = "http://localhost:4318"
    OTLP_METRIC_ENDPOINT: str = Field(default="", description="Overrides OTLP_BASE_ENDPOINT/v1/metrics.")
    OTLP_API_KEY: SecretStr | None = None
    DEPLOY_ENV: str = Field(default="PRODUCTION", description="Dify's deployment name, Sentry's environment.")
    DIFYMAINT_PUSHGATEWAY_URL: str | None = Field(
        default=None,
        description="Prometheus Pushgateway to push each run's metrics to (group job=difymaint, job_name=<job>).",
    )


class Settings(
    DatabaseSettings,
    RedisSettings,
    BillingSettings,
    RetentionSettings,
    MailSettings,
    TidbSettings,
    DispatchSettings,
    StorageSettings,
    TriggerSettings,
    RunSettings,
):
    """Everything difymaint reads from the environment, an env file, or CLI overrides.

    Besides the declared fields, the on/off switches of Dify's jobs (``ENABLE_*``, ``*_ENABLED``) and
    difymaint's per-job overrides (``DIFYMAINT_ENABLE_<JOB>``) are kept as the operator set them
    (:meth:`switch`); their defaults live with the jobs that read them (the registry's ``Switch`` entries).
    """

    _switches: dict[str, object] = PrivateAttr(default_factory=dict)

    model_config = SettingsConfigDict(
        extra="ignore",  # Dify's .env holds hundreds of unrelated keys
        env_ignore_empty=True,  # `REDIS_USERNAME=` in a .env means "unset", as in Dify
        case_sensitive=True,
        validate_default=True,
        allow_inf_nan=False,  # "inf" seconds is never a timeout anyone meant
        defer_build=False,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _EnvFileSource(settings_cls)

    def explicitly_set(self, name: str) -> bool:
        """True when the operator set this variable (env, env file or flag), not just the default."""
        return name in self.model_fields_set or name in self._switches

    def switch(self, name: str) -> bool | None:
        """An on/off switch as the operator set it (env, env file or flag); None when unset. A value that is
        no boolean is a configuration error (read lazily: switches of jobs nobody runs stay unchecked)."""
        if name in type(self).model_fields:
            value = getattr(self, name)
            return value if isinstance(value, bool) or value is None else bool(value)
        raw = self._switches.get(name)
        if raw is None:
            return None
        try:
            return _as_bool.validate_python(raw.strip() if isinstance(raw, str) else raw)
        except ValidationError:
            raise ConfigError(
                f"invalid setting {name}={raw!r}: not a boolean", hint=f"set {name} to true or false"
            ) from None

    def schedule_override(self, name: str) -> str | None:
        """A ``DIFYMAINT_SCHEDULE_<JOB>`` cron line as the operator set it (env, env file or flag); None when unset."""
        raw = self._switches.get(name) if SCHEDULE_NAME.fullmatch(name) else None
        text = str(raw).strip() if raw is not None else ""
        return text or None

    def secret_values(self) -> set[str]:
        """Every secret these settings hold, for :func:`difymaint.core.redact.scrub`: SecretStr fields
        (DB_PASSWORD, REDIS_PASSWORD, REDIS_SENTINEL_PASSWORD, BILLING_API_SECRET_KEY, SMTP_PASSWORD,
        RESEND_API_KEY, TIDB_PRIVATE_KEY, ARCHIVE_STORAGE_SECRET_KEY, …), the other fields Dify keeps credentials
        in (SENTRY_DSN, S3_ACCESS_KEY, …), and the password inside any URL setting (DIFYMAINT_DATABASE_URL,
        DIFYMAINT_REDIS_URL, CELERY_BROKER_URL, …)."""
        found = secrets_in({name: getattr(self, name) for name in type(self).model_fields})
        return found | secrets_in(self.opendal_options)


# Names that are on/off switches of Dify's jobs or difymaint's overrides of them (kept without a declaration).
SWITCH_NAME = re.compile(r"(?:DIFYMAINT_)?ENABLE_[A-Z0-9_]+|[A-Z0-9_]+_ENABLED")
# difymaint's per-job schedule overrides, also kept as given (ops/schedule.py reads them).
SCHEDULE_NAME = re.compile(r"DIFYMAINT_SCHEDULE_[A-Z0-9_]+")
_env_file_values: ContextVar[Mapping[str, str | None] | None] = ContextVar("difymaint_env_file_values", default=None)
_as_bool = TypeAdapter(bool)


class _EnvFileSource(PydanticBaseSettingsSource):
    """Dify's .env, parsed once and cut to the names the settings declare. (The stock dotenv source matches
    every line against every field: seconds of CPU on Dify's 700-line file, on every run of every job.)"""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ answers for every field at once

    def __call__(self) -> dict[str, Any]:
        values = _env_file_values.get() or {}
        # An empty value means unset, as in Dify (env_ignore_empty). OPENDAL_<SCHEME>_* options are no fields:
        # StorageSettings collects them (their names depend on the scheme).
        wanted = {name: values[name] for name in self.settings_cls.model_fields if values.get(name)}
        return wanted | {name: value for name, value in values.items() if name.startswith(OPENDAL_PREFIX) and value}


def load_settings(env_file: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read settings: defaults < env file < environment < non-None CLI overrides."""
    file_values = _read_env_file(env_file) if env_file is not None else {}
    clean = {key: value for key, value in (overrides or {}).items() if value is not None}
    token = _env_file_values.set(file_values)
    try:
        settings = Settings(**clean)
    except ValidationError as exc:
        raise _config_error(exc) from None
    finally:
        _env_file_values.reset(token)
    settings._switches = _switches(file_values, os.environ, clean)
    return settings


def _kept_raw(name: str) -> bool:
    """An undeclared name kept as given: a switch, or a DIFYMAINT_SCHEDULE_<JOB> cron line."""
    return SWITCH_NAME.fullmatch(name) is not None or SCHEDULE_NAME.fullmatch(name) is not None


def _switches(*layers: Mapping[str, object]) -> dict[str, object]:
    """The undeclared switches and schedule overrides as given, later layers winning (empty means unset)."""
    raw: dict[str, object] = {}
    for layer in layers:
        raw.update(
            (name, value)
            for name, value in layer.items()
            if _kept_raw(name) and name not in Settings.model_fields and value not in (None, "")
        )
    return raw


def _read_env_file(env_file: Path) -> dict[str, str | None]:
    """The env file's assignments that difymaint reads (python-dotenv parses them: quotes, ``export``,
    ``${VAR}``), read once."""
    return dotenv_values(stream=io.StringIO(_wanted_lines(_check_env_file(env_file))))


_ASSIGNMENT = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*)")


def _wanted_lines(text: str) -> str:
    """Only the assignments of declared settings and switches (with the lines of a quoted value that runs on):
    Dify's .env holds some 700 settings, and parsing every one costs more than the rest of a switched-off
    run. A file that interpolates (``${VAR}``) is kept whole, since a kept value may refer to any line."""
    if "${" in text:
        return text
    wanted = set(Settings.model_fields)
    kept: list[str] = []
    open_quote = ""  # the quote of a value that runs on to the next lines, and whether those lines are kept
    keeping = False
    for line in text.splitlines():
        if open_quote:
            if keeping:
                kept.append(line)
            if _closes(line, open_quote):
                open_quote = ""
            continue
        match = _ASSIGNMENT.match(line)
        if match is None:
            continue
        keeping = match[1] in wanted or _kept_raw(match[1]) or match[1].startswith(OPENDAL_PREFIX)
        if keeping:
            kept.append(line)
        value = match[2]
        if value[:1] in ("'", '"') and not _closes(value[1:], value[0]):
            open_quote = value[0]
    return "\n".join(kept) + "\n"


def _closes(text: str, quote: str) -> bool:
    """Whether ``text`` ends a value quoted with ``quote`` (a double quote may be escaped)."""
    index = text.find(quote)
    while index > 0 and quote == '"' and text[index - 1] == "\\":
        index = text.find(quote, index + 1)
    return index >= 0


def _check_env_file(env_file: Path) -> str:
    """The file's text; missing, unreadable or binary: one clear line now, not a parser's exception later."""
    if not env_file.is_file():
        raise ConfigError(f"env file {env_file} does not exist", hint="pass --env-file with Dify's .env path")
    try:
        text = env_file.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read env file {env_file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"env file {env_file} is not UTF-8 text", hint="pass Dify's .env, not a binary file"
        ) from None
    if "\x00" in text:
        raise ConfigError(f"env file {env_file} is not a text file", hint="pass Dify's .env, not a binary file")
    return text


def _config_error(exc: ValidationError) -> ConfigError:
    first = exc.errors()[0]
    name = ".".join(str(part) for part in first["loc"]) or "setting"
    value = first.get("input")
    shown = f"={value!r}" if isinstance(value, str | int | float | bool) else ""
    if secret_name(name) is not None:
        shown = ""  # never echo a secret, even a malformed one
    shown = mask_urls(shown)
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return ConfigError(
        f"invalid setting {name}{shown}: {first['msg']}{more}",
        hint=f"fix {name} in the environment or the env file",
    )
