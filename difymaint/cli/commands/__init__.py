"""The CLI's commands: one per registry job (built from its declaration), plus the few that are not jobs.

Job commands import nothing heavy: the job module (SQLAlchemy, Redis, httpx) is imported when the job runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import typer

from difymaint.cli.commands import catalogue, demo, doctor, history, locks, pause, run, schedule, status
from difymaint.cli.options import Common, register_jobs
from difymaint.jobs import JobInfo


def run_job(info: JobInfo, common: Common, values: dict[str, Any]) -> int:
    from difymaint.cli.runner import execute  # SQLAlchemy, Redis: only once a job runs

    return execute(info, common, values)


def register_all(app: typer.Typer, jobs: Mapping[str, JobInfo]) -> None:
    register_jobs(app, jobs, run_job)
    for console in (catalogue, history, status, locks, pause, run):
        console.register(app, jobs, run_job)
    demo.register(app)
    doctor.register(app)
    schedule.register(app)
