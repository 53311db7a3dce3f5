"""The confirmation questions deleting jobs ask on a terminal (``--yes`` answers them in advance)."""

from __future__ import annotations

from difymaint.core.context import Context
from difymaint.core.database import database_url
from difymaint.core.settings import Settings
from difymaint.core.window import TimeWindow


def database_description(settings: Settings) -> str:
    """The database a run will change, password hidden."""
    return str(database_url(settings).render_as_string(hide_password=True))


def plan_aware(settings: Settings) -> bool:
    """Whether workspaces' plans decide (billing on, or a plan file); otherwise every workspace is sandbox."""
    return bool(settings.BILLING_ENABLED or settings.DIFYMAINT_PLAN_FILE)


def tenant_scope(tenant_ids: tuple[str, ...], everyone: str = "all workspaces") -> str:
    return f"workspaces {', '.join(tenant_ids)}" if tenant_ids else everyone


def retention_question(
    ctx: Context, *, what: str, window: TimeWindow, tenant_ids: tuple[str, ...], graceful_period_days: int
) -> str:
    """The question for a plan-aware retention job; warns loudly first when billing is off (all tenants)."""
    scope = tenant_scope(tenant_ids)
    if plan_aware(ctx.settings):
        who = f"expired sandbox {scope} (whitelist and {graceful_period_days}-day grace apply)"
    else:
        ctx.reporter.warning(
            f"BILLING_ENABLED is false: every workspace is treated as sandbox, so the {what} of "
            f"{scope if tenant_ids else scope.upper()} in the window are deleted (Dify's behaviour)"
        )
        who = scope
    return f"Delete {what} {window.describe()} of {who} from {database_description(ctx.settings)}?"
