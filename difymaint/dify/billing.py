"""Tenant plans: Dify's billing API (bulk, cached in Redis like Dify), a static plan file, or billing off.

Fail closed everywhere: a tenant whose plan is unknown is never eligible, and a whitelist that cannot be
fetched stops the job before it deletes anything (Dify's workflow cleaner fails open here:
docs/dify-reference.md#plan-rulec).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from difymaint.core.clock import Clock
from difymaint.core.errors import BillingUnavailable, ConfigError
from difymaint.core.redis_client import KeyNamer
from difymaint.core.settings import Settings, read_plan_file

log = logging.getLogger("difymaint.billing")

PLAN_BATCH_CHUNK = 200  # Dify's get_plan_bulk chunk size
PLAN_CACHE_TTL_S = 600  # Dify's tenant_plan:{id} TTL
SANDBOX = "sandbox"
PAID_PLANS = frozenset({"professional", "team"})


@dataclass(frozen=True)
class TenantPlan:
    plan: str
    expiration_date: int  # unix seconds; -1 = never had a paid subscription

    def to_cache(self) -> str:
        return json.dumps({"plan": self.plan, "expiration_date": self.expiration_date})

    @classmethod
    def parse(cls, raw: Any) -> TenantPlan | None:
        """Validate one plan entry; ints may arrive as strings (docs/dify-reference.md#billing-api).
        Invalid → None (unknown)."""
        if isinstance(raw, bytes | str):
            try:
                raw = json.loads(raw)
            except ValueError:
                return None
        if not isinstance(raw, dict) or not isinstance(raw.get("plan"), str):
            return None
        try:
            expiration = int(raw.get("expiration_date", -1))
        except (TypeError, ValueError):
            return None
        return cls(plan=raw["plan"], expiration_date=expiration)


class PlanSource(Protocol):
    name: str

    def fetch_plans(self, tenant_ids: Sequence[str]) -> dict[str, TenantPlan]:
        """Plans for the tenants it could resolve; missing tenants are unknown."""

    def fetch_whitelist(self) -> set[str]:
        """Tenants that must never be cleaned. Raises BillingUnavailable when it cannot tell."""


class BillingApiClient:
    """Dify's private billing service: POST /subscription/plan/batch, GET /subscription/cleanup/whitelist."""

    name = "billing-api"

    def __init__(
        self,
        base_url: str,
        secret: str,
        *,
        timeout_s: float,
        retry_seconds: float,
        retry_wait_s: float,
        clock: Clock,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Content-Type": "application/json", "Billing-Api-Secret-Key": secret},
            timeout=timeout_s,
            follow_redirects=True,
            transport=transport,
        )
        self._retry_seconds = retry_seconds
        self._retry_wait_s = retry_wait_s
        self._clock = clock
        self.failed_chunks = 0

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        # Like Dify: retry only transport errors, a fixed wait apart, for a bounded time; a non-200
        # answer is final.
        started = self._clock.monotonic()
        while True:
            try:
                response = self._client.request(method, path, **kwargs)
                break
            except httpx.RequestError as exc:
                if self._clock.monotonic() - started + self._retry_wait_s > self._retry_seconds:
                    raise BillingUnavailable(f"billing API {method} {path} failed: {exc!r}") from None
                self._clock.sleep(self._retry_wait_s)
        if response.status_code != 200:
            raise BillingUnavailable(f"billing API {method} {path} answered HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise BillingUnavailable(f"billing API {method} {path} answered with invalid JSON") from None

    def fetch_plans(self, tenant_ids: Sequence[str]) -> dict[str, TenantPlan]:
        plans: dict[str, TenantPlan] = {}
        for start in range(0, len(tenant_ids), PLAN_BATCH_CHUNK):
            chunk = list(tenant_ids[start : start + PLAN_BATCH_CHUNK])
            try:
                body = self._request("POST", "/subscription/plan/batch", json={"tenant_ids": chunk})
            except BillingUnavailable as exc:
                # A failed chunk leaves its tenants unknown, which means "do not delete" (fail closed).
                self.failed_chunks += 1
                log.warning("plan lookup for %d tenants failed: %s", len(chunk), exc.message)
                continue
            data = body.get("data") if isinstance(body, dict) else None
            for tenant_id, raw in (data or {}).items():
                plan = TenantPlan.parse(raw)
                if plan is not None and tenant_id in chunk:
                    plans[tenant_id] = plan
        return plans

    def fetch_whitelist(self) -> set[str]:
        body = self._request("GET", "/subscription/cleanup/whitelist")
        items = body.get("data") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise BillingUnavailable("billing API whitelist answer has no data list")
        return {str(item["tenant_id"]) for item in items if isinstance(item, dict) and item.get("tenant_id")}


class StaticPlanFile:
    """A JSON plan file for operators without Dify's billing service.

    Format: ``{"default": {"plan": "sandbox", "expiration_date": -1} | null,
    "tenants": {"<tenant_id>": {"plan": "team", "expiration_date": 1767225600}},
    "whitelist": ["<tenant_id>", ...]}``. Tenants not listed get ``default`` (none = unknown = kept).
    """

    name = "plan-file"

    def __init__(self, path: Path) -> None:
        try:
            body = read_plan_file(path)
        except ValueError as exc:
            raise ConfigError(f"DIFYMAINT_PLAN_FILE {exc}") from None
        self._default = TenantPlan(body.default.plan, body.default.expiration_date) if body.default else None
        self._plans: dict[str, TenantPlan] = {
            str(tid): TenantPlan(entry.plan, entry.expiration_date) for tid, entry in body.tenants.items()
        }
        self._whitelist = {str(item) for item in body.whitelist}

    def fetch_plans(self, tenant_ids: Sequence[str]) -> dict[str, TenantPlan]:
        found = {tid: self._plans[tid] for tid in tenant_ids if tid in self._plans}
        if self._default is not None:
            found.update({tid: self._default for tid in tenant_ids if tid not in found})
        return found

    def fetch_whitelist(self) -> set[str]:
        return set(self._whitelist)


@dataclass
class TenantPlanCache:
    """Dify's get_plan_bulk_with_cache: MGET ``tenant_plan:{id}``, fetch misses, pipelined SETEX 600 s."""

    source: PlanSource
    redis: Any | None
    keys: KeyNamer
    cache_hits: int = 0
    cache_misses: int = 0
    redis_errors: int = 0

    def _key(self, tenant_id: str) -> str:
        return self.keys.key(f"tenant_plan:{tenant_id}")

    def plans(self, tenant_ids: Iterable[str], *, fresh: bool = False) -> dict[str, TenantPlan]:
        wanted = sorted(set(tenant_ids))
        if not wanted:
            return {}
        found: dict[str, TenantPlan] = {}
        if self.redis is not None and not fresh:
            try:
                raw_values = self.redis.mget([self._key(tid) for tid in wanted])
            except Exception as exc:  # any Redis failure just means "miss", as in Dify
                self.redis_errors += 1
                log.warning("tenant plan cache read failed: %s", exc)
                raw_values = [None] * len(wanted)
            for tid, raw in zip(wanted, raw_values, strict=True):
                plan = TenantPlan.parse(raw) if raw is not None else None
                if plan is not None:
                    found[tid] = plan
        self.cache_hits += len(found)
        misses = [tid for tid in wanted if tid not in found]
        self.cache_misses += len(misses)
        if misses:
            fetched = self.source.fetch_plans(misses)
            found.update(fetched)
            if self.redis is not None and fetched:
                try:
                    pipe = self.redis.pipeline(transaction=False)
                    for tid, plan in fetched.items():
                        pipe.set(self._key(tid), plan.to_cache(), ex=PLAN_CACHE_TTL_S)  # = Dify's SETEX
                    pipe.execute()
                except Exception as exc:
                    self.redis_errors += 1
                    log.warning("tenant plan cache write failed: %s", exc)
        return found


class TenantPolicy(Protocol):
    @property
    def description(self) -> str: ...

    @property
    def billing_enabled(self) -> bool: ...

    def eligible(self, tenant_ids: Iterable[str], *, fresh: bool = False) -> set[str]: ...

    def stats(self) -> dict[str, Any]: ...


class AllTenantsPolicy:
    """BILLING_ENABLED=false: Dify treats every tenant as sandbox, so everything in the window goes."""

    description = "billing disabled: every tenant is treated as sandbox"
    billing_enabled = False

    def eligible(self, tenant_ids: Iterable[str], *, fresh: bool = False) -> set[str]:
        return set(tenant_ids)

    def stats(self) -> dict[str, Any]:
        return {"billing": "disabled"}


@dataclass
class SandboxExpiryPolicy:
    """Eligible = not whitelisted, plan known, plan == sandbox, and never paid or expired beyond grace."""

    cache: TenantPlanCache
    whitelist: set[str]
    graceful_period_days: int
    clock: Clock
    billing_enabled: bool = True
    skipped: dict[str, int] = field(
        default_factory=lambda: {"whitelisted": 0, "unknown_plan": 0, "paid": 0, "in_grace": 0}
    )

    @property
    def description(self) -> str:
        return (
            f"plan-aware ({self.cache.source.name}): expired sandbox tenants only, grace "
            f"{self.graceful_period_days} d, {len(self.whitelist)} whitelisted"
        )

    def eligible(self, tenant_ids: Iterable[str], *, fresh: bool = False) -> set[str]:
        wanted = set(tenant_ids)
        candidates = wanted - self.whitelist
        self.skipped["whitelisted"] += len(wanted) - len(candidates)
        plans = self.cache.plans(candidates, fresh=fresh)
        now_s = int(self.clock.now().timestamp())
        grace_s = self.graceful_period_days * 86400
        result = set()
        for tid in candidates:
            plan = plans.get(tid)
            if plan is None:
                self.skipped["unknown_plan"] += 1
            elif plan.plan != SANDBOX:
                self.skipped["paid"] += 1
            elif plan.expiration_date < 0 or now_s - plan.expiration_date > grace_s:
                result.add(tid)
            else:
                self.skipped["in_grace"] += 1
        return result

    def stats(self) -> dict[str, Any]:
        return {
            "billing": self.cache.source.name,
            "tenant_decisions_skipped": dict(self.skipped),
            "plan_cache_hits": self.cache.cache_hits,
            "plan_cache_misses": self.cache.cache_misses,
            "failed_plan_chunks": getattr(self.cache.source, "failed_chunks", 0),
        }


def plan_source(settings: Settings, clock: Clock) -> PlanSource | None:
    """The configured plan source, or None when billing is off and no plan file is given."""
    if settings.DIFYMAINT_PLAN_FILE is not None:
        return StaticPlanFile(settings.DIFYMAINT_PLAN_FILE)
    if not settings.BILLING_ENABLED:
        return None
    if not settings.BILLING_API_URL:
        raise ConfigError("BILLING_ENABLED is true but BILLING_API_URL is not set")
    secret = settings.BILLING_API_SECRET_KEY.get_secret_value() if settings.BILLING_API_SECRET_KEY else ""
    return BillingApiClient(
        settings.BILLING_API_URL,
        secret,
        timeout_s=settings.DIFYMAINT_BILLING_TIMEOUT,
        retry_seconds=settings.DIFYMAINT_BILLING_RETRY_SECONDS,
        retry_wait_s=settings.DIFYMAINT_BILLING_RETRY_WAIT,
        clock=clock,
    )


def sandbox_expiry_policy(
    settings: Settings, clock: Clock, redis: Any | None, keys: KeyNamer, graceful_period_days: int
) -> TenantPolicy:
    """Build the policy; fetches the whitelist now, so call it after the job lock is held."""
    source = plan_source(settings, clock)
    if source is None:
        return AllTenantsPolicy()
    whitelist = source.fetch_whitelist()
    cache = _plan_cache(source, redis, keys)
    return SandboxExpiryPolicy(cache=cache, whitelist=whitelist, graceful_period_days=graceful_period_days, clock=clock)


@dataclass
class PlanLookup:
    """Plan names only, Dify's ``FeatureService`` view: no whitelist, no expiry, no grace.

    Billing off (and no plan file): every tenant is ``sandbox``, as Dify's feature defaults say. Billing on:
    the bulk plan API through :class:`TenantPlanCache`. A tenant whose plan is unknown is absent from the
    answer; callers treat it as "do nothing" (fail closed).
    """

    cache: TenantPlanCache | None
    unknown: int = 0

    @property
    def billing_enabled(self) -> bool:
        return self.cache is not None

    @property
    def description(self) -> str:
        if self.cache is None:
            return "billing disabled: every tenant's plan is sandbox"
        return f"plans from {self.cache.source.name}"

    def plans(self, tenant_ids: Iterable[str], *, fresh: bool = False) -> dict[str, str]:
        wanted = set(tenant_ids)
        if self.cache is None:
            return dict.fromkeys(wanted, SANDBOX)
        found = {tid: plan.plan for tid, plan in self.cache.plans(wanted, fresh=fresh).items()}
        self.unknown += len(wanted - found.keys())
        return found

    def stats(self) -> dict[str, Any]:
        if self.cache is None:
            return {"billing": "disabled"}
        return {
            "billing": self.cache.source.name,
            "unknown_plan": self.unknown,
            "plan_cache_hits": self.cache.cache_hits,
            "plan_cache_misses": self.cache.cache_misses,
            "failed_plan_chunks": getattr(self.cache.source, "failed_chunks", 0),
        }


def plan_lookup(settings: Settings, clock: Clock, redis: Any | None, keys: KeyNamer) -> PlanLookup:
    """A plan-only lookup over the configured source (billing API, plan file, or billing off)."""
    source = plan_source(settings, clock)
    return PlanLookup(cache=None if source is None else _plan_cache(source, redis, keys))


def _plan_cache(source: PlanSource, redis: Any | None, keys: KeyNamer) -> TenantPlanCache:
    """Dify's shared ``tenant_plan:`` cache sits in front of the billing API only.

    A plan file is the operator's override for this run: its answers must neither be shadowed by plans
    Dify cached from the real billing API, nor written into that cache where Dify's API processes would
    read them for ten minutes.
    """
    shared_cache = None if isinstance(source, StaticPlanFile) else redis
    return TenantPlanCache(source=source, redis=shared_cache, keys=keys)
