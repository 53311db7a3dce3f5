"""The Redis connection (standalone, Sentinel or Cluster) and the one key-naming function.

Dify's ``redis_client`` wrapper prefixes ``"{REDIS_KEY_PREFIX}:"`` for some methods only (get/set/lock/…)
and not for others (mget, pipeline, scan). To share keys with a running Dify, every key difymaint touches
is named through :class:`KeyNamer`, and each Dify key family records whether Dify prefixes it
(docs/dify-reference.md#redis-key-prefix).
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import RedisError

from difymaint.core.errors import ConfigError, RedisUnavailable
from difymaint.core.redact import mask_urls
from difymaint.core.settings import Settings

# Dify key families and whether Dify's own code prefixes them (docs/dify-reference.md#redis-key-prefix).
PREFIXED_BY_DIFY: dict[str, bool] = {
    "retention:": True,  # redis_client.lock(...)
    "maintenance:": True,  # difymaint's own locks, named like Dify's
    "features:": True,  # redis_client.get/setex
    "tenant_plan:": False,  # raw MGET + pipeline SETEX in BillingService.get_plan_bulk_with_cache
    # Dify's dispatcher SETs it through an unprefixed pipeline, but its executor (trigger_subscription_refresh)
    # GETs it prefixed; difymaint writes what the executor reads, so refreshes run under a prefix too.
    "trigger_provider_refresh_lock:": True,
    "api_token_active:": True,  # the Service API writes them with redis_client.set (Dify's own flush scans raw)
    "plugin_autoupgrade_check_task:": True,  # redis_client.setex / get
}


@dataclass(frozen=True)
class KeyNamer:
    prefix: str = ""

    def key(self, logical: str) -> str:
        """The physical key Dify itself would use for ``logical``."""
        prefixed = next((flag for family, flag in PREFIXED_BY_DIFY.items() if logical.startswith(family)), True)
        return self.prefixed(logical) if prefixed else logical

    def prefixed(self, logical: str) -> str:
        return f"{self.prefix}:{logical}" if self.prefix else logical


def redis_configured(settings: Settings) -> bool:
    """Use Redis when forced on, or when the operator configured one (not merely Dify's default host)."""
    if settings.DIFYMAINT_USE_REDIS is not None:
        return settings.DIFYMAINT_USE_REDIS
    return bool(
        settings.DIFYMAINT_REDIS_URL
        or settings.explicitly_set("REDIS_HOST")
        or settings.REDIS_USE_SENTINEL
        or settings.REDIS_USE_CLUSTERS
    )


def _ssl_kwargs(settings: Settings) -> dict[str, Any]:
    if not settings.REDIS_USE_SSL:
        return {}
    reqs = {
        "CERT_NONE": ssl.CERT_NONE,
        "CERT_OPTIONAL": ssl.CERT_OPTIONAL,
        "CERT_REQUIRED": ssl.CERT_REQUIRED,
    }
    if settings.REDIS_SSL_CERT_REQS not in reqs:
        raise ConfigError(
            f"invalid setting REDIS_SSL_CERT_REQS={settings.REDIS_SSL_CERT_REQS!r}",
            hint="use CERT_NONE, CERT_OPTIONAL or CERT_REQUIRED",
        )
    return {
        "ssl": True,
        "ssl_cert_reqs": reqs[settings.REDIS_SSL_CERT_REQS],
        "ssl_ca_certs": settings.REDIS_SSL_CA_CERTS,
        "ssl_certfile": settings.REDIS_SSL_CERTFILE,
        "ssl_keyfile": settings.REDIS_SSL_KEYFILE,
    }


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def _host_ports(raw: str | None, name: str) -> list[tuple[str, int]]:
    pairs = []
    for raw_item in (raw or "").split(","):
        item = raw_item.strip()
        if not item:
            continue
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"invalid setting {name}={raw!r}", hint=f"{name} is a list like host1:26379,host2:26379")
        pairs.append((host, int(port)))
    if not pairs:
        raise ConfigError(f"{name} is empty", hint=f"set {name} to host:port[,host:port]")
    return pairs


def create_redis(settings: Settings) -> Any:
    """Build the client described by the settings (not yet connected)."""
    common: dict[str, Any] = {
        "socket_timeout": settings.REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": settings.REDIS_SOCKET_CONNECT_TIMEOUT,
        "decode_responses": False,
    }
    if settings.DIFYMAINT_REDIS_URL:
        return redis.Redis.from_url(settings.DIFYMAINT_REDIS_URL, **common)
    if settings.REDIS_USE_SENTINEL:
        from redis.sentinel import Sentinel

        if not settings.REDIS_SENTINEL_SERVICE_NAME:
            raise ConfigError("REDIS_USE_SENTINEL is on but REDIS_SENTINEL_SERVICE_NAME is empty")
        sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
            _host_ports(settings.REDIS_SENTINELS, "REDIS_SENTINELS"),
            sentinel_kwargs={
                "socket_timeout": settings.REDIS_SENTINEL_SOCKET_TIMEOUT,
                "username": settings.REDIS_SENTINEL_USERNAME,
                "password": _secret(settings.REDIS_SENTINEL_PASSWORD),
            },
        )
        return sentinel.master_for(  # type: ignore[no-untyped-call,unused-ignore]
            settings.REDIS_SENTINEL_SERVICE_NAME,
            username=settings.REDIS_USERNAME,
            password=_secret(settings.REDIS_PASSWORD),
            db=settings.REDIS_DB,
            **common,
        )
    if settings.REDIS_USE_CLUSTERS:
        from redis.cluster import ClusterNode, RedisCluster

        nodes = [
            ClusterNode(host, port)  # type: ignore[no-untyped-call,unused-ignore]
            for host, port in _host_ports(settings.REDIS_CLUSTERS, "REDIS_CLUSTERS")
        ]
        return RedisCluster(startup_nodes=nodes, password=_secret(settings.REDIS_CLUSTERS_PASSWORD), **common)
    return redis.Redis(
        host=settings.REDIS_HOST,
        port=settings.REDIS_PORT,
        username=settings.REDIS_USERNAME,
        password=_secret(settings.REDIS_PASSWORD),
        db=settings.REDIS_DB,
        **_ssl_kwargs(settings),
        **common,
    )


def check_redis(client: Any, settings: Settings) -> None:
    try:
        client.ping()
    except RedisError as exc:
        if settings.DIFYMAINT_REDIS_URL:
            where, names = mask_urls(settings.DIFYMAINT_REDIS_URL), "--redis-url / DIFYMAINT_REDIS_URL"
            reason = short_redis_error(exc)
        elif settings.REDIS_USE_SENTINEL:
            # redis-py's own text reprs every sentinel client (over a thousand characters); say instead which
            # sentinels we asked for which service, and what each one answered.
            service = settings.REDIS_SENTINEL_SERVICE_NAME
            sentinels = ", ".join(
                f"{host}:{port}" for host, port in _host_ports(settings.REDIS_SENTINELS, "REDIS_SENTINELS")
            )
            where = f"Sentinel {sentinels} (service {service!r})"
            reason = _sentinel_answers(client, service or "") or short_redis_error(exc)
            names = "REDIS_SENTINELS/REDIS_SENTINEL_SERVICE_NAME/REDIS_SENTINEL_PASSWORD"
        elif settings.REDIS_USE_CLUSTERS:
            where, reason, names = f"cluster {settings.REDIS_CLUSTERS}", short_redis_error(exc), "REDIS_CLUSTERS"
        else:
            where, reason = f"{settings.REDIS_HOST}:{settings.REDIS_PORT}", short_redis_error(exc)
            names = "REDIS_HOST/REDIS_PORT/REDIS_PASSWORD"
        raise RedisUnavailable(
            f"cannot reach Redis at {where}: {reason}",
            hint=f"check {names}, or set DIFYMAINT_USE_REDIS=false to lock in the database instead (only when "
            "Dify's own beat is not running this job)",
        ) from None


_MAX_REASON = 160  # one error line stays readable; --debug shows the full traceback


def short_redis_error(exc: BaseException) -> str:
    """The gist of a redis-py error: its first line without the "Error 111 connecting to host:port." preamble
    (the address is named already), cut to a readable length; for a Sentinel without a master, not the repr of
    every sentinel client redis-py appends."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    no_master = re.match(r"No master found for ('[^']*')", text)
    if no_master:
        return f"no Sentinel answered with a master for {no_master.group(1)}"
    text = re.sub(r"^Error -?\d+ connecting to \S+?\. ", "", text).rstrip(".")
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


def _sentinel_answers(client: Any, service: str) -> str:
    """What each configured sentinel says about ``service``: unreachable, unaware of it, or reporting it down."""
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    answers = []
    for sentinel in getattr(manager, "sentinels", []):
        kwargs = sentinel.connection_pool.connection_kwargs
        address = f"{kwargs.get('host')}:{kwargs.get('port')}"
        try:
            masters = sentinel.sentinel_masters()
        except RedisError as exc:
            answers.append(f"{address} {short_redis_error(exc)}")
            continue
        if service not in masters:
            answers.append(f"{address} monitors no service {service!r}")
        else:
            answers.append(f"{address} reports the master of {service!r} down")
    return "; ".join(answers)
