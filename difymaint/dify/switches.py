"""Dify's on/off switches for its beat jobs, honoured by scheduled runs.

Dify schedules a beat job only when its ``ENABLE_*`` switch is on, and ships most of the deleting ones off.
A scheduled difymaint run (the generated crontab and CronJobs pass ``--scheduled``) therefore does nothing
unless the same Dify configuration would have run the job, so taking over from a beat scaled to zero deletes
exactly what that Dify would have. ``DIFYMAINT_ENABLE_<JOB>`` decides instead of Dify's switches, for the
period when Dify's beat still runs other jobs (turn the job off in Dify, on in difymaint). A run started by
hand is never blocked; it only says that a scheduled run would skip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Switch:
    """One of Dify's boolean settings that must be on for a job to be scheduled."""

    name: str
    dify_default: bool
    # Why unset means what ``dify_default`` says when that is not Dify's own default (a branch-only task that
    # difymaint runs only when asked to); shown wherever the switch is named.
    unset_note: str = ""

    def on(self, settings: Any) -> bool:
        """Whether the switch is on under these settings (Dify's default when the operator left it unset)."""
        value = settings.switch(self.name)
        return self.dify_default if value is None else bool(value)

    def describe(self) -> str:
        if self.unset_note:
            return f"{self.name} ({self.unset_note})"
        return f"{self.name} (Dify's default: {'on' if self.dify_default else 'off'})"

    def unset_reason(self) -> str:
        return f"unset ({self.unset_note})" if self.unset_note else "unset, and Dify's default is off"


@dataclass(frozen=True)
class SwitchState:
    enabled: bool
    reason: str  # which setting decided, in words an operator can act on


def override_variable(job_name: str) -> str:
    """``clean-messages`` → ``DIFYMAINT_ENABLE_CLEAN_MESSAGES``."""
    return "DIFYMAINT_ENABLE_" + job_name.upper().replace("-", "_")


def switch_state(settings: Any, job_name: str, switches: Sequence[Switch]) -> SwitchState:
    """Whether a scheduled run of the job goes ahead under these settings, and why."""
    override = override_variable(job_name)
    forced = settings.switch(override)
    if forced is not None:
        return SwitchState(forced, f"{override}={'true' if forced else 'false'}")
    for switch in switches:
        if not switch.on(settings):
            how = "set to false" if settings.explicitly_set(switch.name) else switch.unset_reason()
            return SwitchState(False, f"{switch.name} is {how}")
    if not switches:
        return SwitchState(True, "no Dify switch governs it")
    return SwitchState(True, " and ".join(f"{switch.name} is on" for switch in switches))
