"""Keeping secrets out of every line difymaint prints, without garbling the rest (docs/design.md, Secrets).

What is a secret:

* the settings Dify and difymaint hold credentials in, by name (:data:`SECRET_SETTINGS`: passwords, keys,
  tokens, DSNs), any ``SecretStr`` field, and the password inside any URL;
* for settings Dify adds later, a name that looks secret (:data:`SECRET_NAME`), but only with a value long
  enough to be unambiguous (:data:`MIN_SUBSTRING_LENGTH`);
* never a setting whose name says it holds a number, a duration, a size or a flag (:data:`NOT_SECRET_NAME`:
  ``TRIGGER_PROVIDER_CREDENTIAL_THRESHOLD_SECONDS=3600`` is no secret).

How it is hidden:

* :func:`mask_urls` hides the password of any ``scheme://user:password@host`` URL by position, whatever its
  length and whatever produced the text (a driver's error, a pydantic message, a repr in a traceback);
* :func:`scrub` replaces a known secret wherever it appears in a text (also URL-encoded or quoted) only when it
  is at least :data:`MIN_SUBSTRING_LENGTH` characters: Dify's stock ``TIDB_PRIVATE_KEY=dify`` replaced as a
  substring would turn ``difymaint`` into ``***maint`` and tell the reader which word the secret is;
* :func:`mask_data` masks structured output (the ``--json`` summary, console JSON, log fields) by key and by
  whole value, never by substituting inside the serialised text, so the JSON stays valid: a field whose key
  names a secret, a string that *is* a known secret (short ones too), and URL userinfo and long secrets inside
  string values.

The known values live in a process-wide registry (:func:`register_secrets`) that the CLI fills from the
environment and the flags before loading settings, and from :meth:`Settings.secret_values` after; the log
filter (:class:`RedactingFilter`), the runner's error ladder and the console commands read it.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

from pydantic import SecretStr

MASK = "***"
# Shorter secrets are hidden only where they stand whole (a URL password, a structured value): inside a text
# they would mask ordinary words (Dify ships TIDB_PRIVATE_KEY=dify, and every line says "difymaint").
MIN_SUBSTRING_LENGTH = 8

# Where Dify (api/configs, docker/envs/security.env.example, the Helm chart's Secret) and difymaint keep
# credentials. Access-key ids count too: they are one half of a credential and stay in the same Secret.
SECRET_SETTINGS = frozenset(
    {
        # Dify's core: database, Redis, Celery, the app's own keys
        "DB_PASSWORD",
        "REDIS_PASSWORD",
        "REDIS_SENTINEL_PASSWORD",
        "REDIS_CLUSTERS_PASSWORD",
        "CELERY_SENTINEL_PASSWORD",
        "SECRET_KEY",
        "INIT_PASSWORD",
        "ADMIN_API_KEY",
        "INNER_API_KEY",
        "INNER_API_KEY_FOR_PLUGIN",
        "PLUGIN_DAEMON_KEY",
        "PLUGIN_DIFY_INNER_API_KEY",
        "CODE_EXECUTION_API_KEY",
        "SANDBOX_API_KEY",
        "KNOWLEDGE_FS_JWT_SECRET",
        "DIFY_AGENT_SERVER_SECRET_KEY",
        "DIFY_AGENT_SHELLCTL_AUTH_TOKEN",
        "DIFY_AGENT_INNER_API_KEY",
        "DIFY_AGENT_PLUGIN_DAEMON_API_KEY",
        "AGENT_BACKEND_API_TOKEN",
        "WEAVIATE_AUTHENTICATION_APIKEY_ALLOWED_KEYS",
        # billing, mail, OAuth, observability
        "BILLING_API_SECRET_KEY",
        "SMTP_PASSWORD",
        "RESEND_API_KEY",
        "SENDGRID_API_KEY",
        "GITHUB_CLIENT_SECRET",
        "GOOGLE_CLIENT_SECRET",
        "NOTION_CLIENT_SECRET",
        "NOTION_INTERNAL_SECRET",
        "NOTION_INTEGRATION_TOKEN",
        "UNSTRUCTURED_API_KEY",
        "OTLP_API_KEY",
        "ENTERPRISE_OTLP_API_KEY",
        "SENTRY_DSN",
        "API_SENTRY_DSN",
        "WEB_SENTRY_DSN",
        "PLUGIN_SENTRY_DSN",
        # object storage (Dify's backends and the archive)
        "ARCHIVE_STORAGE_ACCESS_KEY",
        "ARCHIVE_STORAGE_SECRET_KEY",
        "S3_ACCESS_KEY",
        "S3_SECRET_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "AZURE_BLOB_ACCOUNT_KEY",
        "GOOGLE_STORAGE_SERVICE_ACCOUNT_JSON_BASE64",
        "ALIYUN_OSS_ACCESS_KEY",
        "ALIYUN_OSS_SECRET_KEY",
        "TENCENT_COS_SECRET_KEY",
        "OCI_ACCESS_KEY",
        "OCI_SECRET_KEY",
        "HUAWEI_OBS_ACCESS_KEY",
        "HUAWEI_OBS_SECRET_KEY",
        "VOLCENGINE_TOS_ACCESS_KEY",
        "VOLCENGINE_TOS_SECRET_KEY",
        "BAIDU_OBS_ACCESS_KEY",
        "BAIDU_OBS_SECRET_KEY",
        "SUPABASE_API_KEY",
        "CLICKZETTA_VOLUME_PASSWORD",
        "MINIO_SECRET_KEY",
        # TiDB Cloud (the pool jobs) and the vector stores
        "TIDB_PUBLIC_KEY",
        "TIDB_PRIVATE_KEY",
        "TIDB_ON_QDRANT_API_KEY",
        "TIDB_VECTOR_PASSWORD",
        "WEAVIATE_API_KEY",
        "QDRANT_API_KEY",
        "MILVUS_PASSWORD",
        "MILVUS_TOKEN",
        "PGVECTOR_PASSWORD",
        "ELASTICSEARCH_PASSWORD",
        "ELASTICSEARCH_API_KEY",
        "OPENSEARCH_PASSWORD",
        "CHROMA_AUTH_CREDENTIALS",
        "TENCENT_VECTOR_DB_API_KEY",
        "BAIDU_VECTOR_DB_API_KEY",
        "UPSTASH_VECTOR_TOKEN",
        "ORACLE_PASSWORD",
        "ORACLE_WALLET_PASSWORD",
        "COUCHBASE_PASSWORD",
        "ANALYTICDB_PASSWORD",
        "ANALYTICDB_KEY_SECRET",
        "ANALYTICDB_NAMESPACE_PASSWORD",
        "VIKINGDB_ACCESS_KEY",
        "VIKINGDB_SECRET_KEY",
        "TABLESTORE_ACCESS_KEY_SECRET",
        "ALIYUN_SLS_ACCESS_KEY_SECRET",
        "LINDORM_PASSWORD",
        "HUAWEI_CLOUD_PASSWORD",
        "RELYT_PASSWORD",
        "ALIBABACLOUD_MYSQL_PASSWORD",
    }
)
# Names that look secret, for settings Dify adds after this list; trusted only with long values.
SECRET_NAME = re.compile(
    r"PASSWORD|PASSWD|SECRET|PRIVATE_KEY|API_KEY|ACCESS_KEY|ACCOUNT_KEY|ACCESS_TOKEN|AUTH_TOKEN|_TOKEN$|_DSN$"
    r"|CREDENTIAL|CONNECTION_STRING",
    re.IGNORECASE,
)
# A number, a duration, a size or a flag, whatever the rest of the name says (…_CREDENTIAL_THRESHOLD_SECONDS,
# ACCESS_TOKEN_EXPIRE_MINUTES, RESET_PASSWORD_TOKEN_EXPIRY_MINUTES, INDEXING_MAX_SEGMENTATION_TOKENS_LENGTH).
NOT_SECRET_NAME = re.compile(
    r"_THRESHOLD(_|$)|_SECONDS$|_TTL$|_SIZE$|_DAYS$|_HOURS$|_MINUTES$|_COUNT$|_LIMIT$|_EXPIRY$|_EXPIRY_"
    r"|_ENABLED$|_LENGTH$|_TOKENS(_|$)",
    re.IGNORECASE,
)

# scheme://[user]:password@ — the password runs to the last "@" before the host part (passwords may hold
# unencoded "@" or ":"), stopping at whitespace, quotes and list separators (Sentinel lists) so that a URL
# inside a sentence, a repr or a list ends. A password holding those is still hidden by the registry.
_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s'\"<>;,]*):(?P<password>[^\s'\"<>;,]*)@"
)

_registry: set[str] = set()
_registry_lock = threading.Lock()


def secret_name(name: str) -> str | None:
    """Why a setting (or a structured field) of this name holds a secret: ``"listed"`` (a known credential,
    whatever its value), ``"pattern"`` (looks like one: trust only long values), or None."""
    upper = name.upper().replace("-", "_")
    if NOT_SECRET_NAME.search(upper):
        return None
    if upper in SECRET_SETTINGS:
        return "listed"
    return "pattern" if SECRET_NAME.search(upper) else None


def mask_urls(text: str) -> str:
    """``redis://:pw@host:6379/0`` → ``redis://:***@host:6379/0``, for every URL in ``text``."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)


def url_password(value: str) -> str | None:
    """The (decoded) password inside a URL, or None."""
    if "://" not in value:
        return None
    try:
        password = urlsplit(value.strip()).password
    except ValueError:
        # An unparsable URL (bad port, …) may still carry a password: take it by position.
        match = _URL_CREDENTIALS.search(value)
        password = match["password"] if match else None
    return unquote(password) if password else None


def secrets_in(mapping: Mapping[str, object]) -> set[str]:
    """Secret values among raw settings (environment, flags, settings fields): listed names and SecretStr
    values whatever their length, secret-looking names with long values, URL passwords, ping URLs."""
    found: set[str] = set()
    for name, raw in mapping.items():
        if raw is None:
            continue
        declared = isinstance(raw, SecretStr)
        value = raw.get_secret_value() if isinstance(raw, SecretStr) else raw
        if not isinstance(value, str) or not value:
            continue
        kind = secret_name(name)
        if declared or kind == "listed" or (kind == "pattern" and len(value) >= MIN_SUBSTRING_LENGTH):
            found.add(value)
        if name.upper().endswith("PING_URL"):
            found.add(value)  # a dead-man ping URL carries its check's key in the path
        if password := url_password(value):
            found.add(password)
    return found


def register_secrets(values: Iterable[str]) -> None:
    """Remember secret values for the rest of the process (every later :func:`scrub` / :func:`mask_data`)."""
    with _registry_lock:
        _registry.update(value for value in values if value)


def clear_secrets() -> None:
    """Forget the registry (tests running several CLI invocations in one process)."""
    with _registry_lock:
        _registry.clear()


def _known(extra: Iterable[str] | None = None) -> set[str]:
    with _registry_lock:
        known = set(_registry)
    known.update(value for value in (extra or ()) if value)
    return known


def scrub(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with URL passwords masked and every known secret of at least :data:`MIN_SUBSTRING_LENGTH`
    characters (``secrets`` plus the registry) replaced, in every spelling a library may quote it in."""
    long = [secret for secret in _known(secrets) if len(secret) >= MIN_SUBSTRING_LENGTH]
    # Longest first, so that a secret containing another is replaced whole.
    for secret in sorted(long, key=len, reverse=True):
        forms = {secret, quote(secret, safe=""), quote_plus(secret), repr(secret)[1:-1], json.dumps(secret)[1:-1]}
        for form in forms:
            if form in text:
                text = text.replace(form, MASK)
    return mask_urls(text)


def mask_data(data: Any, *, key: str | None = None) -> Any:
    """A copy of structured output fit to print: values under a key that names a secret, strings that are a
    known secret, URL passwords and long secrets inside strings masked. Numbers, booleans and the structure
    stay as they are, so the JSON made of it stays valid and typed."""
    return _mask(data, key, _known())


def _mask(data: Any, key: str | None, known: set[str]) -> Any:
    if isinstance(data, Mapping):
        return {name: _mask(value, str(name), known) for name, value in data.items()}
    if isinstance(data, list | tuple):
        return [_mask(item, key, known) for item in data]
    if isinstance(data, str):
        if not data:
            return data
        if (key is not None and secret_name(key) is not None) or data in known:
            return MASK
        return scrub(data)
    return data


def dumps_masked(data: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`mask_data` (``default=str`` unless given): the one way JSON reaches output."""
    kwargs.setdefault("default", str)
    return json.dumps(mask_data(json.loads(json.dumps(data, **kwargs))), **kwargs)


class RedactingFilter(logging.Filter):
    """Scrubs every record's message (and masks its structured fields) before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg, record.args = scrub(message), None
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = mask_data(fields)
        if record.exc_info and record.exc_info[1] is not None:
            # A traceback is formatted later from exc_info; render it now, scrubbed, instead.
            import traceback

            record.msg = f"{record.msg}\n{scrub(''.join(traceback.format_exception(*record.exc_info)))}"
            record.exc_info = None
            record.exc_text = None
        return True
