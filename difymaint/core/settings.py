"""Settings, read with Dify's own environment variable names.

An operator points difymaint at Dify's ``.env`` file or ConfigMap unchanged. Field names *are* the env var
names (Dify's own convention), so an error can always name the variable. difymaint's own knobs carry the
``DIFYMAINT_`` prefix. CLI flags are overlaid in one place, :func:`load_settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from difymaint.core.errors import ConfigError

OnLocked = Literal["skip", "fail", "ok"]
ScanStrategy = Literal["auto", "global", "eligible-apps", "eligible_apps"]


class DatabaseSettings(BaseSettings):
    DIFYMAINT_DATABASE_URL: str | None = Field(
        default=None, description="Any SQLAlchemy URL; overrides the DB_* variables (sqlite included)."
    )
    DB_TYPE: str = "postgresql"
    DB_HOST: str = "localhost"
    DB_PORT: PositiveInt = 5432
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
        description="Seconds; SET LOCAL statement_timeout for every batch on PostgreSQL (0 = off).",
    )
    DIFYMAINT_LOCK_TIMEOUT: NonNegativeInt = Field(
        default=5, description="Seconds; SET LOCAL lock_timeout for every batch on PostgreSQL (0 = off)."
    )


class RedisSettings(BaseSettings):
    DIFYMAINT_REDIS_URL: str | None = Field(
        default=None, description="redis:// or rediss:// URL; overrides the REDIS_* variables."
    )
    DIFYMAINT_USE_REDIS: bool | None = Field(
        default=None,
        description="Force Redis on or off. Default: on when REDIS_HOST, a Sentinel, a cluster or "
        "DIFYMAINT_REDIS_URL is configured.",
    )
    REDIS_HOST: str = "localhost"
    REDIS_PORT: PositiveInt = 6379
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
    CELERY_BROKER_URL: str | None = Field(
        default=None,
        description="Dify's Celery broker (redis:// or rediss://), for jobs that hand work to Dify's workers.",
    )


class BillingSettings(BaseSettings):
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
    DIFYMAINT_PLAN_FILE: Path | None = Field(
        default=None,
        description="JSON file of tenant plans and a whitelist, used instead of the billing API "
        "(self-hosted operators who want per-tenant retention). Implies plan-aware cleanup.",
    )


class RetentionSettings(BaseSettings):
    SANDBOX_EXPIRED_RECORDS_RETENTION_DAYS: PositiveInt = 30
    SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_SIZE: PositiveInt = 1000
    SANDBOX_EXPIRED_RECORDS_CLEAN_BATCH_MAX_INTERVAL: NonNegativeInt = 200
    SANDBOX_EXPIRED_RECORDS_CLEAN_GRACEFUL_PERIOD: NonNegativeInt = 21
    SANDBOX_EXPIRED_RECORDS_CLEAN_TASK_LOCK_TTL: PositiveInt = 90000
    SANDBOX_EXPIRED_RECORDS_CLEAN_SCAN_STRATEGY: ScanStrategy = "auto"
    SANDBOX_EXPIRED_RECORDS_CLEAN_APP_PAGE_SIZE: PositiveInt = 500
    # Dead in Dify since 2026-01 (legacy clean_messages); read so a stale .env still parses.
    PLAN_SANDBOX_CLEAN_MESSAGE_DAY_SETTING: PositiveInt = 30
    PLAN_SANDBOX_CLEAN_DAY_SETTING: PositiveInt = 30
    PLAN_PRO_CLEAN_DAY_SETTING: PositiveInt = 7
    WORKFLOW_LOG_RETENTION_DAYS: PositiveInt = 30
    WORKFLOW_LOG_CLEANUP_BATCH_SIZE: PositiveInt = 100
    WORKFLOW_LOG_CLEANUP_SPECIFIC_WORKFLOW_IDS: str = ""
    OAUTH_ACCESS_TOKEN_RETENTION_DAYS: PositiveInt = 30
    # archive-workflow-runs / restore-workflow-runs (docs/jobs/archive-workflow-runs.md#settings; branch-only in Dify,
    # defaults of its CLI).
    PAID_PLAN_WORKFLOW_RUN_ARCHIVE_RETENTION_DAYS: PositiveInt = 90
    PAID_PLAN_WORKFLOW_RUN_ARCHIVE_BATCH_SIZE: PositiveInt = 100
    PAID_PLAN_WORKFLOW_RUN_ARCHIVE_TENANT_IDS: str = Field(
        default="", description="Comma-separated workspaces to archive (grayscale rollout); empty = all paid."
    )
    ARCHIVE_STORAGE_ENABLED: bool = False
    ARCHIVE_STORAGE_ENDPOINT: str | None = None
    ARCHIVE_STORAGE_ARCHIVE_BUCKET: str | None = None
    ARCHIVE_STORAGE_ACCESS_KEY: str | None = None
    ARCHIVE_STORAGE_SECRET_KEY: SecretStr | None = None
    ARCHIVE_STORAGE_REGION: str = "auto"
    DIFYMAINT_ARCHIVE_DIR: Path | None = Field(
        default=None, description="Write/read workflow-run archives in this local directory instead of S3."
    )
    DIFYMAINT_ARCHIVE_STORAGE_TIMEOUT: PositiveFloat = Field(default=60.0, description="Seconds per S3 request.")


class MailSettings(BaseSettings):
    """Dify's mail settings (docs/dify-reference.md#mail). MAIL_TYPE unset = mail disabled, as in Dify."""

    MAIL_TYPE: str | None = Field(default=None, description="smtp | resend (sendgrid: not supported yet).")
    MAIL_DEFAULT_SEND_FROM: str | None = None
    SMTP_SERVER: str | None = None
    SMTP_PORT: PositiveInt = 465
    SMTP_USERNAME: str | None = None
    SMTP_PASSWORD: SecretStr | None = None
    SMTP_USE_TLS: bool = False
    SMTP_OPPORTUNISTIC_TLS: bool = False
    SMTP_LOCAL_HOSTNAME: str | None = None
    RESEND_API_KEY: SecretStr | None = None
    RESEND_API_URL: str = "https://api.resend.com"
    DIFYMAINT_MAIL_TIMEOUT: PositiveFloat = Field(default=30.0, description="Seconds per SMTP/Resend call.")
    CONSOLE_WEB_URL: str = ""


class SwitchSettings(BaseSettings):
    """Dify's beat switches (with Dify's defaults) and difymaint's per-job overrides; see core/switches.py."""

    ENABLE_CLEAN_EMBEDDING_CACHE_TASK: bool = False
    ENABLE_CLEAN_UNUSED_DATASETS_TASK: bool = False
    ENABLE_CLEAN_MESSAGES: bool = False
    ENABLE_MAIL_CLEAN_DOCUMENT_NOTIFY_TASK: bool = False
    ENABLE_DATASETS_QUEUE_MONITOR: bool = False
    ENABLE_HUMAN_INPUT_TIMEOUT_TASK: bool = True
    ENABLE_CHECK_UPGRADABLE_PLUGIN_TASK: bool = True
    MARKETPLACE_ENABLED: bool = True
    WORKFLOW_LOG_CLEANUP_ENABLED: bool = False
    ENABLE_WORKFLOW_RUN_CLEANUP_TASK: bool = False  # "for saas only" in Dify
    ENABLE_CLEAN_OAUTH_ACCESS_TOKENS_TASK: bool = True
    ENABLE_WORKFLOW_SCHEDULE_POLLER_TASK: bool = True
    ENABLE_TRIGGER_PROVIDER_REFRESH_TASK: bool = True
    ENABLE_API_TOKEN_LAST_USED_UPDATE_TASK: bool = True
    # Per-job overrides: set, they decide instead of Dify's switches (unset = follow Dify).
    DIFYMAINT_ENABLE_CLEAN_MESSAGES: bool | None = None
    DIFYMAINT_ENABLE_CLEAN_WORKFLOW_RUNS: bool | None = None
    DIFYMAINT_ENABLE_CLEAN_WORKFLOW_LOGS: bool | None = None
    DIFYMAINT_ENABLE_CLEAN_EMBEDDINGS: bool | None = None
    DIFYMAINT_ENABLE_CLEAN_OAUTH_TOKENS: bool | None = None
    DIFYMAINT_ENABLE_CLEAN_UNUSED_DATASETS: bool | None = None
    DIFYMAINT_ENABLE_NOTIFY_CLEANED_DOCUMENTS: bool | None = None
    DIFYMAINT_ENABLE_ARCHIVE_WORKFLOW_RUNS: bool | None = None


class TidbSettings(BaseSettings):
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
    CREATE_TIDB_SERVICE_JOB_ENABLED: bool = Field(
        default=False, description="Dify's runtime guard: the pool filler does nothing unless this is true."
    )
    # Dify's beat switches; difymaint does not gate on them (they say whether Dify runs the job too).
    ENABLE_CREATE_TIDB_SERVERLESS_TASK: bool = False
    ENABLE_UPDATE_TIDB_SERVERLESS_STATUS_TASK: bool = False
    DIFYMAINT_TIDB_TIMEOUT: PositiveFloat = Field(default=10.0, description="Seconds per TiDB Cloud request phase.")
    DIFYMAINT_TIDB_MAX_REQUESTS: PositiveInt = Field(
        default=10,
        description="Failure budget: give up after this many failed TiDB Cloud requests in a row (429, 5xx, "
        "network errors); later calls in the same run then fail at once.",
    )
    DIFYMAINT_TIDB_MAX_SECONDS: PositiveFloat = Field(
        default=30.0, description="Failure budget: give up once failing requests have taken this long."
    )


class RunSettings(BaseSettings):
    DIFYMAINT_LOCK_TTL: PositiveInt = Field(
        default=600,
        description="Seconds. The lock is renewed after every batch, so this only bounds how long a "
        "crashed run blocks the next one (Dify's 25 h TTL is not used).",
    )
    DIFYMAINT_ON_LOCKED: OnLocked = Field(
        default="skip", description="Lock held by another run: skip (exit 5), fail (exit 1) or ok (exit 0)."
    )
    DIFYMAINT_TARGET_BATCH_MS: NonNegativeInt = Field(
        default=300, description="Adapt the batch size toward this duration per batch (0 = fixed size)."
    )
    DIFYMAINT_MAX_BATCH_SIZE: PositiveInt = 10000
    DIFYMAINT_WORKERS: int = Field(
        default=1, ge=1, le=8, description="Parallel connections for the cascade jobs (--workers; PostgreSQL)."
    )
    DIFYMAINT_LONG_TRANSACTION_WARN_S: NonNegativeInt = Field(
        default=3600, description="Warn about other transactions open longer than this (they block vacuum)."
    )
    DIFYMAINT_ASSUME_YES: bool = False
    DIFYMAINT_SCHEDULED: bool = Field(
        default=False,
        description="This is an unattended scheduled run (what --scheduled says): skip jobs Dify's switches turn off.",
    )


class Settings(
    DatabaseSettings,
    RedisSettings,
    BillingSettings,
    RetentionSettings,
    MailSettings,
    SwitchSettings,
    TidbSettings,
    RunSettings,
):
    """Everything difymaint reads from the environment, an env file, or CLI overrides."""

    model_config = SettingsConfigDict(
        extra="ignore",  # Dify's .env holds hundreds of unrelated keys
        env_ignore_empty=True,  # `REDIS_USERNAME=` in a .env means "unset", as in Dify
        case_sensitive=True,
        validate_default=True,
    )

    def explicitly_set(self, name: str) -> bool:
        """True when the operator set this variable (env, env file or flag), not just the default."""
        return name in self.model_fields_set


def load_settings(env_file: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read settings: defaults < env file < environment < non-None CLI overrides."""
    if env_file is not None and not env_file.is_file():
        raise ConfigError(f"env file {env_file} does not exist", hint="pass --env-file with Dify's .env path")
    clean = {key: value for key, value in (overrides or {}).items() if value is not None}
    try:
        return Settings(_env_file=env_file, **clean)
    except ValidationError as exc:
        raise _config_error(exc) from None


def _config_error(exc: ValidationError) -> ConfigError:
    first = exc.errors()[0]
    name = ".".join(str(part) for part in first["loc"]) or "setting"
    value = first.get("input")
    shown = f"={value!r}" if isinstance(value, str | int | float | bool) else ""
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return ConfigError(
        f"invalid setting {name}{shown}: {first['msg']}{more}",
        hint=f"fix {name} in the environment or the env file",
    )
