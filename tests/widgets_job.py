"""A throwaway job kept outside the package: the registry test adds it in-process to show that one module
plus one registry entry is all a new job needs."""

from __future__ import annotations

from dataclasses import dataclass, field

from difymaint.core.context import Context
from difymaint.core.window import TimeWindow
from difymaint.engine.options import RunOptions
from difymaint.engine.run import JobRun


@dataclass
class WidgetParams:
    window: TimeWindow
    run: RunOptions = field(default_factory=RunOptions)
    tenant_ids: tuple[str, ...] = ()
    polish: bool = False


Params = WidgetParams


def run(job: JobRun, params: WidgetParams) -> None:
    job.summary.tables = {"widgets": 3 if params.polish else 2}
    job.summary.details["tenant_ids"] = list(params.tenant_ids)


def confirmation(ctx: Context, params: WidgetParams) -> str:
    return f"Delete widgets {params.window.describe()}?"
