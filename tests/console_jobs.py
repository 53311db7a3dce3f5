"""Jobs that exist only for the console tests: real runs through job_run (lock, batches, history hooks) whose
length and failure the test chooses. ``python -m tests.console_jobs JOB …`` is the child command run-due
starts in the tests (``--child-module tests.console_jobs``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from difymaint.core.context import Context
from difymaint.dify.switches import Switch
from difymaint.engine.options import RunOptions
from difymaint.engine.run import JobRun
from difymaint.jobs import JobInfo
from difymaint.jobs.spec import Batching, Opt


@dataclass
class TickParams:
    job_name: str
    run: RunOptions = field(default_factory=RunOptions)
    batches: int = 3
    batch_seconds: float = 0.0
    fail_after: int | None = None


Params = TickParams


def run(job: JobRun, params: TickParams) -> None:
    done = 0
    while done < params.batches and job.keep_going():
        if params.fail_after is not None and done >= params.fail_after:
            raise RuntimeError("tick machine jammed")
        with job.batch() as batch:
            with batch.transaction() as conn:
                conn.execute(sa.text("SELECT 1"))
            job.ctx.stop.wait(params.batch_seconds)  # the work of a batch; a SIGTERM cuts it short
            done += 1
            job.summary.rows_remaining = (params.batches - done) * 10
            batch.record(scanned=10, affected=10, rows={"ticks": 10})
    job.settle_remaining(lambda: (params.batches - done) * 10)


def confirmation(ctx: Context, params: TickParams) -> str:
    return f"Tick {params.batches} batches?"


def _job(name: str, *, seconds: float = 0.0, batches: int = 3, switches: tuple[Switch, ...] = ()) -> JobInfo:
    return JobInfo(
        name=name,
        module="tests.console_jobs",
        summary=f"{name}: ticks for the console tests.",
        schedule="0 12 * * *",
        dify_task=f"{name.replace('-', '_')}_task",
        dify_switch=switches[0].name if switches else "",
        switches=switches,
        lock_key=f"maintenance:{name}",
        tables=("ticks",),
        options=(
            Opt("job_name", ("--job-name",), "Which entry this is.", default=name),
            Opt("batches", ("--batches",), "Batches to run.", type=int, default=batches),
            Opt("batch_seconds", ("--batch-seconds",), "Seconds per batch.", type=float, default=seconds),
            Opt("fail_after", ("--fail-after",), "Fail after this many batches.", type=int),
        ),
        batch=Batching(default=10),
    )


TEST_JOBS: dict[str, JobInfo] = {
    info.name: info
    for info in (
        _job("quick-job"),
        _job("slow-job", seconds=1.0, batches=4),
        _job("long-job", seconds=0.5, batches=40),
        _job("off-job", switches=(Switch("ENABLE_CLEAN_MESSAGES", dify_default=False),)),
        _job("paused-job"),
        _job("notdue-job"),
    )
}


if __name__ == "__main__":
    import signal

    from difymaint.cli.app import create_app

    # As the real entry point (difymaint/_entry.py) does: Ctrl-C is ours even when the parent ignored SIGINT
    # (a shell's background job does), or `status --watch` could not be stopped.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    create_app(TEST_JOBS)()
