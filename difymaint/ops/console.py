"""The operator's console, minus the terminal: catalogue data, status rows, the run chain and run-due.

The commands in :mod:`difymaint.cli.commands` render what these functions return (rich tables, or
``--json``); tests call both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import FrameType
from typing import Any

from difymaint.core.exit_codes import ExitCode
from difymaint.core.settings import Settings
from difymaint.dify.switches import override_variable, switch_state
from difymaint.jobs import JobInfo
from difymaint.ops.history import RUNNING, HistoryStore, RunRecord
from difymaint.ops.schedule import effective_schedule, is_due, is_overdue, next_fire, schedule_zone

FAILED_OUTCOMES = ("failed", "threshold_exceeded")
SUCCESS_OUTCOMES = ("done",)
RUN_DUE = "run-due"  # run-due's own tick is a history record too: it is where a never-run job counts from

# "Worst" exit code of a chain: a failure outranks an interruption, which outranks a partial run, …
_SEVERITY: dict[int, int] = {
    ExitCode.OK: 0,
    ExitCode.SKIPPED_LOCKED: 1,
    ExitCode.PARTIAL: 2,
    ExitCode.THRESHOLD_EXCEEDED: 3,
    ExitCode.INTERRUPTED_SIGINT: 4,
    ExitCode.INTERRUPTED_SIGTERM: 4,
    ExitCode.USAGE: 5,
    ExitCode.FAILED: 6,
}


def worst(codes: Sequence[int]) -> int:
    """The exit code of a chain: the most severe of its jobs' codes (unknown codes count as failures)."""
    if not codes:
        return int(ExitCode.OK)
    return max(codes, key=lambda code: _SEVERITY.get(code, 6))


def run_chain(
    names: Sequence[str],
    run_one: Callable[[str], int],
    *,
    keep_going: bool,
    say: Callable[[str], None],
) -> int:
    """Run jobs in order in this process; stop at the first non-zero exit unless ``keep_going``."""
    codes: list[int] = []
    for index, name in enumerate(names):
        say(f"$ difymaint {name}")
        code = run_one(name)
        codes.append(code)
        if code != 0 and not keep_going and index + 1 < len(names):
            say(f"stopping: {name} exited {code}; not run: {', '.join(names[index + 1 :])} (see --keep-going)")
            break
    return worst(codes)


# --- catalogue ------------------------------------------------------------------------------------------------


def exit_codes_of(info: JobInfo) -> list[tuple[int, str]]:
    codes = [
        (0, "done; or disabled (a --scheduled run with the Dify switch off); or paused"),
        (1, "failed"),
        (2, "usage or configuration error"),
    ]
    if info.alerts:
        codes.append((3, "threshold exceeded"))
    if info.batch is not None or info.destructive:
        codes.append((4, "partial: --max-runtime / --max-batches / a pause stopped it; the next run continues"))
    codes += [(5, "skipped: another run holds the lock"), (130, "interrupted (SIGINT)"), (143, "interrupted (SIGTERM)")]
    return codes


def job_catalogue(info: JobInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "summary": info.summary,
        "dify_task": info.dify_task,
        "schedule": effective_schedule(info.name, info.schedule) or None,
        "default_schedule": info.schedule or None,
        "dify_switch": info.dify_switch or None,
        "switches": [{"name": s.name, "dify_default": s.dify_default} for s in info.switches],
        "override": override_variable(info.name) if info.scheduled else None,
        "lock": info.lock_key,
        "scheduled": info.scheduled,
        "destructive": info.destructive,
    }


def job_parameters(info: JobInfo) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for opt in info.all_options():
        setting = opt.setting
        if info.window is not None and opt.name == "days":
            setting = info.window.setting
        if info.batch is not None and opt.name == "batch_size":
            setting = info.batch.setting
        if info.batch is not None and opt.name == "sleep_ms":
            setting = info.batch.sleep_setting
        default: Any = opt.default
        if opt.name == "batch_size" and info.batch is not None and not info.batch.setting:
            default = info.batch.default
        if opt.kind == "flag":
            default = False
        type_name = {"flag": "flag", "ids": "ids", "repeated_ids": "ids (repeatable)"}.get(opt.kind, opt.type.__name__)
        if opt.choices:
            type_name = "|".join(dict.fromkeys(c.replace("_", "-") for c in opt.choices))
        params.append(
            {
                "name": opt.name,
                "flags": list(opt.flags),
                "type": type_name,
                "default": str(default) if default is not None else None,
                "setting": setting,
                "help": opt.help,
            }
        )
    for name, setting in info.from_settings:
        params.append(
            {"name": name, "flags": [], "type": "setting", "default": None, "setting": setting, "help": "from setting"}
        )
    return params


# --- status ---------------------------------------------------------------------------------------------------


@dataclass
class JobStatus:
    job: str
    schedule: str | None
    enabled: bool
    switch_reason: str
    paused: dict[str, Any] | None
    last_run: RunRecord | None
    last_success: RunRecord | None
    overdue: bool
    next_run: datetime | None
    rows_7d: int
    running: list[RunRecord] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # run ids whose heartbeat stopped (crashed runs)

    @property
    def last_failed(self) -> bool:
        return self.last_run is not None and self.last_run.outcome in FAILED_OUTCOMES

    @property
    def problem(self) -> str | None:
        """What `status --check` alerts on: only for enabled, unpaused jobs."""
        if not self.enabled or self.paused is not None:
            return None
        if self.last_failed:
            return "last run failed"
        if self.overdue:
            return "overdue"
        return None

    def to_dict(self, now: datetime) -> dict[str, Any]:
        def eta(record: RunRecord) -> float | None:
            if record.rows_remaining and record.rate:
                return round(record.rows_remaining / record.rate, 1)
            return None

        return {
            "job": self.job,
            "schedule": self.schedule,
            "enabled": self.enabled,
            "switch": self.switch_reason,
            "paused": self.paused,
            "last_run": (
                {
                    "run_id": self.last_run.run_id,
                    "started_at": self.last_run.started_at.isoformat(),
                    "outcome": self.last_run.outcome,
                    "exit_code": self.last_run.exit_code,
                }
                if self.last_run
                else None
            ),
            "last_success": self.last_success.started_at.isoformat() if self.last_success else None,
            "last_success_age_s": (now - self.last_success.started_at).total_seconds() if self.last_success else None,
            "overdue": self.overdue,
            "next_run": self.next_run.isoformat() if self.next_run else None,
            "rows_7d": self.rows_7d,
            "running": [
                {
                    "run_id": r.run_id,
                    "host": r.host,
                    "started_at": r.started_at.isoformat(),
                    "heartbeat_at": r.heartbeat_at.isoformat() if r.heartbeat_at else None,
                    "rows": r.rows_total,
                    "rate_rows_per_s": r.rate,
                    "rows_remaining": r.rows_remaining,
                    "eta_s": eta(r),
                    "stale": r.run_id in self.stale,
                }
                for r in self.running
            ],
            "problem": self.problem,
        }


def job_status(
    store: HistoryStore,
    jobs: Mapping[str, JobInfo],
    settings: Settings,
    now: datetime,
    environ: Mapping[str, str] | None = None,
) -> list[JobStatus]:
    zone = schedule_zone(environ if environ is not None else {"LOG_TZ": settings.LOG_TZ or ""})
    pauses = store.pauses_all()
    running = store.running()
    stale_after = timedelta(seconds=2 * settings.DIFYMAINT_LOCK_TTL)
    rows: list[JobStatus] = []
    for info in jobs.values():
        schedule = effective_schedule(info.name, info.schedule, environ) or None
        switch = switch_state(settings, info.name, info.switches)
        last = _last_finished(store, info.name)
        success = store.last(info.name, outcomes=SUCCESS_OUTCOMES, real_only=True)
        pause = pauses.get(info.name)
        mine = [r for r in running if r.job == info.name]
        rows.append(
            JobStatus(
                job=info.name,
                schedule=schedule,
                enabled=switch.enabled and info.scheduled,
                switch_reason=switch.reason if info.scheduled else "manual command (never scheduled)",
                paused=(
                    {"reason": pause.reason, "paused_at": pause.paused_at.isoformat(), "by": pause.paused_by}
                    if pause
                    else None
                ),
                last_run=last,
                last_success=success,
                overdue=bool(schedule)
                and is_overdue(schedule or "", success.started_at if success else None, now, zone),
                next_run=next_fire(schedule, now, zone) if schedule else None,
                rows_7d=store.rows_since(info.name, now - timedelta(days=7)),
                running=mine,
                stale=[r.run_id for r in mine if (r.heartbeat_at or r.started_at) < now - stale_after],
            )
        )
    return rows


def _last_finished(store: HistoryStore, job: str) -> RunRecord | None:
    for record in store.recent(job=job, limit=20):
        if record.outcome != RUNNING and not record.dry_run:
            return record
    return None


# --- run-due --------------------------------------------------------------------------------------------------


@dataclass
class DueDecision:
    job: str
    action: str  # run | skip
    reason: str
    expected_s: float | None = None  # how long its last real run took (quick jobs start first)
    exit_code: int | None = None
    started_at: float | None = None
    ended_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.job, "action": self.action, "reason": self.reason, "exit_code": self.exit_code}


def plan_due(
    store: HistoryStore,
    jobs: Mapping[str, JobInfo],
    settings: Settings,
    now: datetime,
    environ: Mapping[str, str] | None = None,
) -> list[DueDecision]:
    """Which scheduled jobs fired since their last recorded run, and which of those may run now."""
    tick = store.last(RUN_DUE)
    # A job that never ran counts from the previous tick (or the last minute on the very first one), so a fresh
    # install does not start every daily job at once.
    first_seen = tick.started_at if tick is not None else now - timedelta(minutes=1)
    zone = schedule_zone(environ if environ is not None else {"LOG_TZ": settings.LOG_TZ or ""})
    pauses = store.pauses_all()
    running = {r.job for r in store.running() if (r.heartbeat_at or r.started_at) >= now - _stale(settings)}
    decisions: list[DueDecision] = []
    for info in jobs.values():
        schedule = effective_schedule(info.name, info.schedule, environ)
        if not info.scheduled or not schedule:
            continue
        last = store.last(info.name, real_only=True)
        if not is_due(schedule, last.started_at if last else None, now, first_seen=first_seen, tz=zone):
            continue
        switch = switch_state(settings, info.name, info.switches)
        if not switch.enabled:
            decisions.append(DueDecision(info.name, "skip", f"disabled: {switch.reason}"))
        elif info.name in pauses:
            decisions.append(DueDecision(info.name, "skip", "paused"))
        elif info.name in running:
            decisions.append(DueDecision(info.name, "skip", "still running"))
        else:
            done = store.last(info.name, outcomes=SUCCESS_OUTCOMES, real_only=True)
            expected = done.duration_s if done else None
            decisions.append(DueDecision(info.name, "run", f"schedule {schedule} fired", expected_s=expected))
    # Quick jobs first (unknown durations last): with every child started at once this only orders the starts,
    # but it keeps a minute-level job ahead of a retention job on a host that limits processes.
    decisions.sort(key=lambda d: (d.action != "run", d.expected_s is None, d.expected_s or 0.0))
    return decisions


def _stale(settings: Settings) -> timedelta:
    return timedelta(seconds=2 * settings.DIFYMAINT_LOCK_TTL)


def dispatch_due(
    decisions: Sequence[DueDecision],
    jobs: Mapping[str, JobInfo],
    *,
    child_module: str = "difymaint",
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    poll: Callable[[float], None] = time.sleep,
    dry_run: bool = False,
) -> list[DueDecision]:
    """Start every job to run as its own child process at once, then wait for all of them.

    Concurrent children are what keeps a long retention job from delaying a quick one; each child is an
    ordinary scheduled run (``--scheduled --yes``), with its own lock, history record and exit code; with
    ``dry_run`` each child is a dry run instead (which does not count as the job's run for the next tick).
    """
    children: list[tuple[DueDecision, subprocess.Popen[bytes]]] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        # A CronJob stops only PID 1: pass SIGTERM/SIGINT on, so each child finishes its batch and records it.
        for _, process in children:
            if process.poll() is None:
                process.send_signal(signum)

    in_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)} if in_main else {}
    try:
        mode = ("--dry-run",) if dry_run else ("--yes",)
        _start_and_wait(decisions, jobs, children, child_module, (*mode, *extra_args), env, poll)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return list(decisions)


def _start_and_wait(
    decisions: Sequence[DueDecision],
    jobs: Mapping[str, JobInfo],
    children: list[tuple[DueDecision, subprocess.Popen[bytes]]],
    child_module: str,
    extra_args: Sequence[str],
    env: Mapping[str, str] | None,
    poll: Callable[[float], None],
) -> None:
    for decision in decisions:
        if decision.action != "run":
            continue
        info = jobs[decision.job]
        argv = [sys.executable, "-m", child_module, info.name, "--scheduled", *info.scheduled_args]
        decision.started_at = time.monotonic()
        children.append((decision, subprocess.Popen([*argv, *extra_args], env=dict(env or os.environ))))
    while any(decision.exit_code is None for decision, _ in children):
        for decision, child in children:
            if decision.exit_code is None and child.poll() is not None:
                code = child.returncode
                decision.exit_code = 128 - code if code < 0 else code  # killed by signal N: the shell's 128 + N
                decision.ended_at = time.monotonic()
        poll(0.05)
